/**
 * What a job's end adds to the metrics (duration, queue wait, spend, cost per image, images, GPU
 * seconds, money the cache saved) and to the cost model's measurements of self-hosted models.
 */
import type { SettleListener } from '../jobs/settle.ts';
import type { CostModel } from '../pricing/cost-model.ts';
import type { CostMetrics } from './metrics.ts';

export function jobMetricsListener(metrics: CostMetrics, costs: CostModel): SettleListener {
  return {
    name: 'metrics',
    phase: 'notify',
    onSettled: ({ job, end }) => {
      const backend = end.route?.backend.name ?? (end.status === 'succeeded' && end.cache ? 'cache' : (job.backend ?? 'unknown'));
      const labels = { model: job.model, backend };
      metrics.jobDuration.observe({ ...labels, status: end.status }, (Date.now() - job.createdAt.getTime()) / 1000);
      if (job.startedAt) metrics.queueWait.observe({ priority: job.priority }, Math.max(0, job.startedAt.getTime() - job.createdAt.getTime()) / 1000);
      if (end.status !== 'succeeded') return;
      const images = end.images.length;
      if (end.cache) metrics.cacheSaved.inc({ kind: end.cache.kind }, end.cache.savedUsd);
      if (end.costUsd != null) {
        metrics.spend.inc(labels, end.costUsd);
        for (let i = 0; i < images; i++) metrics.imageCost.observe(labels, end.costUsd / Math.max(1, images));
      }
      metrics.images.inc(labels, images);
      if (end.route && end.gpuSeconds !== undefined && costs.isSelfHosted(end.route)) {
        costs.observe(end.route.backend.name, end.route.backendModel, end.gpuSeconds, images, job.request.size);
        metrics.gpuSeconds.inc({ backend: end.route.backend.name, host: end.host ?? '' }, end.gpuSeconds);
      }
    },
  };
}
