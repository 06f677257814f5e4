export * from './errors.js';
export * from './defaults.js';
export * from './config.js';
