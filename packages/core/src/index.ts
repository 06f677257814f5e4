export * from './errors.js';
export * from './defaults.js';
export * from './config.js';
export * from './cifar10.js';
export * from './synthetic-cifar10.js';
export * from './rng.js';
export * from './progress-bar.js';
export * from './input-pipeline.js';
