export { OutboxRelay, type RelayOptions } from "./relay";
export { ScanWorker, defaultWorkerName, type WorkerOptions } from "./worker";
export { JobStore } from "./jobs-db";
export { SimulatedScanHandler } from "./simulated-handler";
export { SCAN_JOB_GROUP, SCAN_JOB_STREAM, ensureConsumerGroup, publishJob } from "./stream";
export { PermanentJobError, type ScanFinding, type ScanJob, type ScanJobContext, type ScanJobHandler, type ScanJobResult } from "./types";
