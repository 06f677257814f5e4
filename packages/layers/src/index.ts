export { initEngine, type BackendChoice, type InitEngineOptions, type EngineInfo } from './engine.js';
