/**
 * Cell tags <-> cell roles, in plain TypeScript (no JupyterLab imports, so Jest runs it in Node).
 *
 * The vocabulary is exactly what the CLI reads (jupyter_pipeline/notebook/__init__.py and the
 * README's tag table), which is Kale's plus papermill's `parameters`. This module only reads and
 * writes tags; which step an untagged cell belongs to is the server's analysis, never guessed here.
 */

/** What a cell is, as its own tags say. `none`: an untagged cell (it continues the span above). */
export type RoleKind =
  'none' | 'step' | 'imports' | 'functions' | 'parameters' | 'metrics' | 'skip';

/** The roles a cell can be given, in the order the role editor lists them. */
export const ROLE_KINDS: RoleKind[] = [
  'none',
  'step',
  'imports',
  'functions',
  'parameters',
  'metrics',
  'skip'
];

/** One cell's role and per-step settings, as read from (and written back to) its tags. */
export interface CellRole {
  kind: RoleKind;
  /** Step name as tagged (for `step`). */
  step?: string;
  /** `prev:` targets, in tag order. */
  prev: string[];
  image?: string;
  /** `limit:RESOURCE:VALUE` tags: resource -> value (`cpu`, `memory`, `nvidia.com/gpu`, …). */
  limits: Record<string, string>;
  /** `cache:enabled` / `cache:disabled`; undefined: no tag. */
  cache?: boolean;
  /** `retry:N`; undefined: no tag. */
  retries?: number;
  /** `env:NAME=VALUE` tags. */
  env: Record<string, string>;
}

/** Role tags and the role each one means (both `pipeline-parameters` and `parameters` work). */
export const ROLE_TAGS: Record<string, RoleKind> = {
  imports: 'imports',
  functions: 'functions',
  'pipeline-parameters': 'parameters',
  parameters: 'parameters',
  'pipeline-metrics': 'metrics',
  skip: 'skip'
};

/** The tag written for a role when the cell had none of its spellings (Kale's spelling). */
const ROLE_TAG_OUT: Record<string, string> = {
  imports: 'imports',
  functions: 'functions',
  parameters: 'pipeline-parameters',
  metrics: 'pipeline-metrics',
  skip: 'skip'
};

const STEP_NAME = /^[A-Za-z0-9_-]+$/;

/** An empty role (an untagged cell). */
export function emptyRole(): CellRole {
  return { kind: 'none', prev: [], limits: {}, env: {} };
}

/** True when `name` is a valid step name for a tag (letters, digits, `_`, `-`). */
export function isValidStepName(name: string): boolean {
  return STEP_NAME.test(name);
}

/**
 * KFP-normalized step name, as the CLI computes it (`load_Data` -> `load-data`): used to match
 * `prev:` targets and the analysis' step names against tags.
 */
export function kfpName(name: string): string {
  let out = name
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '-')
    .replace(/^-+|-+$/g, '');
  if (!out) {
    out = 'step';
  }
  if (!/^[a-z]/.test(out)) {
    out = 's-' + out;
  }
  return out;
}

/** Is this one of the tags this module owns (so that writing a role may replace it)? */
export function isPipelineTag(tag: string): boolean {
  if (tag in ROLE_TAGS) {
    return true;
  }
  const head = tag.split(':', 1)[0];
  return (
    tag.includes(':') &&
    ['step', 'block', 'prev', 'image', 'limit', 'cache', 'retry', 'retries', 'env'].includes(head)
  );
}

/**
 * Read a cell's role from its tags. Malformed pipeline tags are kept as they are in `other` by
 * `splitTags` (the server reports them with the cell number); this never throws.
 */
export function parseTags(tags: readonly string[]): CellRole {
  const role = emptyRole();
  for (const raw of tags) {
    const tag = raw.trim();
    if (tag in ROLE_TAGS) {
      if (role.kind === 'none') {
        role.kind = ROLE_TAGS[tag];
      }
      continue;
    }
    const colon = tag.indexOf(':');
    if (colon < 0) {
      continue;
    }
    const head = tag.slice(0, colon);
    const rest = tag.slice(colon + 1);
    switch (head) {
      case 'step':
      case 'block':
        if (rest && role.kind === 'none') {
          role.kind = 'step';
          role.step = rest;
        }
        break;
      case 'prev':
        if (rest) {
          role.prev.push(rest);
        }
        break;
      case 'image':
        if (rest) {
          role.image = rest;
        }
        break;
      case 'limit': {
        const at = rest.lastIndexOf(':');
        if (at > 0) {
          role.limits[rest.slice(0, at)] = rest.slice(at + 1);
        }
        break;
      }
      case 'cache':
        if (rest === 'enabled' || rest === 'disabled') {
          role.cache = rest === 'enabled';
        }
        break;
      case 'retry':
      case 'retries':
        if (/^\d+$/.test(rest)) {
          role.retries = parseInt(rest, 10);
        }
        break;
      case 'env': {
        const eq = rest.indexOf('=');
        if (eq > 0) {
          role.env[rest.slice(0, eq)] = rest.slice(eq + 1);
        }
        break;
      }
    }
  }
  return role;
}

/**
 * The tags for `role`, keeping every tag this module does not own (papermill's
 * `injected-parameters`, `hide-input`, …) where it was, and the spelling the cell already used
 * (`block:` vs `step:`, `parameters` vs `pipeline-parameters`).
 *
 * @param role - the role to write.
 * @param previous - the cell's current tags.
 * @param stepPrefix - `step` or `block` for a cell that had no step tag (the notebook's habit).
 */
export function roleToTags(
  role: CellRole,
  previous: readonly string[] = [],
  stepPrefix: 'step' | 'block' = 'step'
): string[] {
  const kept = previous.filter(t => !isPipelineTag(t.trim()));
  const oldStep = previous.find(t => /^(step|block):/.test(t));
  const prefix = oldStep ? oldStep.split(':', 1)[0] : stepPrefix;
  const out: string[] = [];
  switch (role.kind) {
    case 'none':
      break;
    case 'step':
      if (role.step) {
        out.push(`${prefix}:${role.step}`);
      }
      break;
    default: {
      // Keep `parameters` on a papermill-style cell instead of rewriting it to Kale's spelling.
      const same = previous.find(t => ROLE_TAGS[t] === role.kind);
      out.push(same ?? ROLE_TAG_OUT[role.kind]);
    }
  }
  for (const p of role.prev) {
    out.push(`prev:${p}`);
  }
  if (role.image) {
    out.push(`image:${role.image}`);
  }
  for (const [resource, value] of Object.entries(role.limits)) {
    if (value !== '') {
      out.push(`limit:${resource}:${value}`);
    }
  }
  if (role.cache !== undefined) {
    out.push(role.cache ? 'cache:enabled' : 'cache:disabled');
  }
  if (role.retries !== undefined) {
    out.push(`retry:${role.retries}`);
  }
  for (const [name, value] of Object.entries(role.env)) {
    out.push(`env:${name}=${value}`);
  }
  return [...kept, ...out];
}

/** Do the two tag lists say the same (order-insensitive)? Used to skip no-op writes. */
export function sameTags(a: readonly string[], b: readonly string[]): boolean {
  if (a.length !== b.length) {
    return false;
  }
  const sa = [...a].sort();
  const sb = [...b].sort();
  return sa.every((t, i) => t === sb[i]);
}

/**
 * Rename step `from` to `to` in every cell: its `step:`/`block:` tags and every `prev:` naming it
 * (Kale leaves stale `prev:` tags behind, kubeflow/kale#616). Names are matched as the CLI
 * matches them (KFP-normalized), so `prev:load_data` follows a rename of `load-data`.
 *
 * @returns the new tag lists, one per input cell; cells that do not change keep their array.
 */
export function renameStep(
  cells: readonly (readonly string[])[],
  from: string,
  to: string
): string[][] {
  const key = kfpName(from);
  return cells.map(tags => {
    let changed = false;
    const next = tags.map(tag => {
      const m = /^(step|block|prev):(.+)$/.exec(tag.trim());
      if (m && kfpName(m[2]) === key && m[2] !== to) {
        changed = true;
        return `${m[1]}:${to}`;
      }
      return tag;
    });
    return changed ? next : (tags as string[]);
  });
}

/** The step names tagged in a notebook, in order, without duplicates (for completion). */
export function taggedStepNames(cells: readonly (readonly string[])[]): string[] {
  const seen = new Set<string>();
  const out: string[] = [];
  for (const tags of cells) {
    const role = parseTags(tags);
    if (role.kind === 'step' && role.step && !seen.has(role.step)) {
      seen.add(role.step);
      out.push(role.step);
    }
  }
  return out;
}

/** `block` when the notebook already spells step tags Kale-1.x style, else `step`. */
export function stepPrefixOf(cells: readonly (readonly string[])[]): 'step' | 'block' {
  for (const tags of cells) {
    for (const t of tags) {
      if (t.startsWith('block:')) {
        return 'block';
      }
      if (t.startsWith('step:')) {
        return 'step';
      }
    }
  }
  return 'step';
}

/** A step name for a new step that no cell uses yet: `step-1`, `step-2`, … */
export function freshStepName(existing: readonly string[], base = 'step'): string {
  const taken = new Set(existing.map(kfpName));
  for (let n = 1; ; n++) {
    const name = `${base}-${n}`;
    if (!taken.has(kfpName(name))) {
      return name;
    }
  }
}
