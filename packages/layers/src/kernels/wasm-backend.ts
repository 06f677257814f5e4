/**
 * The parts of tfjs-backend-wasm's `BackendWasm` that our kernels use: the package exports no type
 * for it, so each kernel casts its `backend` argument to this one declaration.
 */
import type { DataType, TensorInfo } from '@tensorflow/tfjs';

export interface WasmBackend {
  /** A new tensor in the wasm heap; views of the heap taken before this call may be detached. */
  makeOutput(shape: number[], dtype: DataType): TensorInfo;
  /**
   * A view of the tensor's bytes in the heap, valid until the next allocation. Typed as the float32
   * case our kernels mostly handle; for another dtype it is that dtype's typed array.
   */
  typedArrayFromHeap(t: TensorInfo): Float32Array;
  disposeData(dataId: object, force?: boolean): boolean;
  incRef(dataId: object): void;
}
