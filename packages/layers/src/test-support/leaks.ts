/**
 * tfjs `expectNoLeakedTensors`, extended to backend data ids: a kernel that forgets to free an
 * intermediate (our wasm kernels call other kernels directly) leaks a data id but no tf.Tensor.
 */
import * as tf from '@tensorflow/tfjs';

/**
 * Runs `fn` (sync or async) and throws if it left tensors or backend buffers behind. `fn` must
 * dispose whatever it returns; its return value is passed through.
 */
export async function expectNoLeakedTensors<T>(fn: () => T | Promise<T>, label = 'fn'): Promise<T> {
  const before = tf.memory().numTensors;
  const idsBefore = tf.engine().backend.numDataIds();
  const out = await fn();
  const after = tf.memory().numTensors;
  const idsAfter = tf.engine().backend.numDataIds();
  if (after !== before || idsAfter !== idsBefore) {
    throw new Error(
      `${label} leaked ${after - before} tensor(s) and ${idsAfter - idsBefore} backend data id(s) ` +
        `on backend '${tf.getBackend()}' (tensors ${before} -> ${after}, data ids ${idsBefore} -> ${idsAfter})`,
    );
  }
  return out;
}
