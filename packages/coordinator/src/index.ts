export * from './coordinator.js';
export * from './handshake.js';
export * from './all-reduce.js';
export * from './round.js';
export * from './stall-detector.js';
export * from './dataset-server.js';
export * from './metrics.js';
