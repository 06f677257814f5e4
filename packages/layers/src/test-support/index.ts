/** Shared test helpers for @svd-train/layers (imported by tests only; excluded from the build). */
export { TOL } from './tolerances.js';
export { loadReference, refToTensor, refToNhwc, REFERENCE_DIR, type RefTensor } from './reference.js';
export { relErr, expectClose, toArray, type Numeric } from './compare.js';
export { gradCheck, type GradCheckOptions, type GradCheckResult } from './grad-check.js';
export { expectNoLeakedTensors } from './leaks.js';
export { forEachBackend, onBackend, TEST_ENGINES, FAST_ENGINES, type TestBackend } from './backends.js';
export { seededUniform } from './random.js';
export { prunedTestModel, testTrainingBatch } from './models.js';
export { countKernelCalls, cpuHasAvx2Fma, cpuHasAvx512, cpuIsZen5OrLater, errorCodeOf } from './kernels.js';
