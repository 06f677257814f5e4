/**
 * A model's layers as a graph the inference walks take (`fused-inference.ts`, `lanes-inference.ts`).
 */
import * as tf from '@tensorflow/tfjs';

/** One layer called once: the symbolic tensors it reads, in order, and the one it makes. */
export interface GraphNode {
  layer: tf.layers.Layer;
  inputs: tf.SymbolicTensor[];
  output: tf.SymbolicTensor;
}

/**
 * The model's layers in order, each as a node, and how many nodes read each symbolic tensor (by id);
 * null where a walk cannot take the graph: several inputs or outputs, or a layer called more than
 * once or with several outputs (shared layers, nested models). Those are left to `model.apply`.
 */
export function modelGraph(model: tf.LayersModel): { nodes: GraphNode[]; readers: Map<number, number> } | null {
  if (model.inputs.length !== 1 || model.outputs.length !== 1) return null;
  const nodes: GraphNode[] = [];
  const readers = new Map<number, number>();
  for (const layer of model.layers) {
    if (layer.getClassName() === 'InputLayer') continue;
    if (layer.inboundNodes.length !== 1) return null;
    const node = layer.inboundNodes[0];
    if (node.outputTensors.length !== 1) return null;
    for (const t of node.inputTensors) readers.set(t.id, (readers.get(t.id) ?? 0) + 1);
    nodes.push({ layer, inputs: node.inputTensors, output: node.outputTensors[0] });
  }
  return { nodes, readers };
}
