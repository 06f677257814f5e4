export { initEngine, type BackendChoice, type InitEngineOptions, type EngineInfo } from './engine.js';
export * from './svd-init.js';
export { SVDDense, type SVDDenseArgs } from './svd-dense.js';
export { SVDConv2D, svdConvForwardCost, referenceFactors, type SVDConv2DArgs, type SvdForward, type SvdPadding } from './svd-conv2d.js';
export { buildResNet, type BuildResNetOptions, type ResNetDepth } from './resnet.js';
export { namedParameters, namedBuffers, getParameters, setParameters, getBuffers, setBuffers, layerNameFor, moduleNameFor, type WireTensor, type NamedVariable } from './parameter-names.js';
export { countFlops, countParams, type LayerFlops } from './flops.js';
export { SvdBatchNorm, batchNormTrain, batchNormInfer, type SvdBatchNormArgs, type BatchNormTrainResult } from './batch-norm.js';
export { selectRankByEnergy, selectRankByThreshold, pruneModel, pruneByEnergy, pruneByThreshold, type PruneLayerReport, type PruneResult } from './prune.js';
