export { runCoordCli, buildCoordProgram } from './coord-cli.js';
export { configFromOptions, type StartOptions } from './commands/start.js';
export { runWorkerCli, buildWorkerProgram } from './worker-cli.js';
export { renderReport, writeReport, readMetrics, effectiveRank, spectraOf, type ReportInput, type Spectrum, type MacsRow } from './report.js';
export type { PipelineSummary, PipelinePoint } from './report-pipeline.js';
export { linePlot, barChart, type Series, type PlotOptions } from './svg-plot.js';
export { niceTicks } from './plot-scales.js';
export { reportError, usageError, EXIT_USAGE } from './cli-errors.js';
export { spawnWorkers, workerBinPath } from './spawn-workers.js';
