/**
 * elkjs for the pipeline graph, in its web worker (elkjs' own `elk-worker`, bundled by the lab
 * extension builder as a worker chunk): a layout, tens to hundreds of milliseconds of elkjs'
 * compiled Java on a loaded machine, then never blocks the page, and the worker's JIT stays
 * warm between layouts. Where no worker can start (a page that forbids workers, a chunk that
 * does not load), the bundled elkjs lays out on the page as before.
 */
import type { ELK, ElkNode } from 'elkjs/lib/elk-api';
import ElkApi from 'elkjs/lib/elk-api';

/** How long the worker may take to answer its first message before the page lays out itself. */
const START_TIMEOUT_MS = 15_000;

/** A graph laid out once in the background so the first real layouts find elkjs compiled. */
function warmUpGraph(): ElkNode {
  const children = Array.from({ length: 12 }, (_, i) => ({ id: `n${i}`, width: 80, height: 28 }));
  const edges = children.slice(1).map((c, i) => ({
    id: `e${i}`,
    sources: [children[Math.floor(i / 2)].id],
    targets: [c.id],
    labels: [{ id: `l${i}`, text: 'x', width: 40, height: 16 }]
  }));
  return {
    id: 'warm-up',
    layoutOptions: { 'elk.algorithm': 'layered', 'elk.direction': 'DOWN' },
    children,
    edges
  };
}

function inWorker(): Promise<ELK> {
  return new Promise<ELK>((resolve, reject) => {
    const worker = new Worker(new URL('elkjs/lib/elk-worker.min.js', import.meta.url));
    const fail = (why: unknown) => {
      worker.terminate();
      reject(why);
    };
    const timer = setTimeout(() => fail(new Error('no answer')), START_TIMEOUT_MS);
    worker.addEventListener('error', event => fail(event.message || 'worker error'), {
      once: true
    });
    const elk = new ElkApi({ workerFactory: () => worker });
    elk.knownLayoutAlgorithms().then(() => {
      clearTimeout(timer);
      resolve(elk);
      // Off the page's thread: warm the worker up for the layouts to come.
      void elk.layout(warmUpGraph()).then(() => elk.layout(warmUpGraph()));
    }, fail);
  });
}

async function onPage(): Promise<ELK> {
  const { default: Bundled } = await import('elkjs/lib/elk.bundled.js');
  return new Bundled();
}

let instance: Promise<ELK> | null = null;

/** The one elkjs of the page (started on first use). */
export function getElk(): Promise<ELK> {
  if (!instance) {
    instance = inWorker().catch(error => {
      console.warn('jupyter-pipeline: no elkjs worker, laying graphs out on the page', error);
      return onPage();
    });
  }
  return instance;
}
