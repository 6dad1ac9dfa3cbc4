import {
  emptyRole,
  freshStepName,
  kfpName,
  parseTags,
  renameStep,
  roleToTags,
  stepPrefixOf,
  taggedStepNames
} from '../src/model/tags';

describe('parseTags', () => {
  it('reads a step with prev, image, limits, cache, retries and env', () => {
    const role = parseTags([
      'step:train',
      'prev:load_data',
      'image:python:3.11',
      'limit:cpu:2',
      'limit:nvidia.com/gpu:1',
      'cache:disabled',
      'retry:3',
      'env:MODE=fast'
    ]);
    expect(role.kind).toBe('step');
    expect(role.step).toBe('train');
    expect(role.prev).toEqual(['load_data']);
    expect(role.image).toBe('python:3.11');
    expect(role.limits).toEqual({ cpu: '2', 'nvidia.com/gpu': '1' });
    expect(role.cache).toBe(false);
    expect(role.retries).toBe(3);
    expect(role.env).toEqual({ MODE: 'fast' });
  });

  it('reads Kale 1.x block: tags and every role tag spelling', () => {
    expect(parseTags(['block:load']).step).toBe('load');
    expect(parseTags(['imports']).kind).toBe('imports');
    expect(parseTags(['functions']).kind).toBe('functions');
    expect(parseTags(['pipeline-parameters']).kind).toBe('parameters');
    expect(parseTags(['parameters']).kind).toBe('parameters');
    expect(parseTags(['pipeline-metrics']).kind).toBe('metrics');
    expect(parseTags(['skip']).kind).toBe('skip');
    expect(parseTags(['hide-input']).kind).toBe('none');
    expect(parseTags(['block:']).kind).toBe('none');
  });
});

describe('roleToTags', () => {
  it('round-trips through parseTags', () => {
    const tags = ['step:train', 'prev:split', 'limit:memory:4Gi', 'cache:enabled', 'retry:1'];
    expect(roleToTags(parseTags(tags), tags).sort()).toEqual([...tags].sort());
  });

  it('keeps foreign tags and the spellings the cell used', () => {
    const role = { ...emptyRole(), kind: 'step' as const, step: 'renamed' };
    expect(roleToTags(role, ['hide-input', 'block:old'])).toEqual(['hide-input', 'block:renamed']);
    const params = { ...emptyRole(), kind: 'parameters' as const };
    expect(roleToTags(params, ['parameters'])).toEqual(['parameters']);
    expect(roleToTags(params, [])).toEqual(['pipeline-parameters']);
    expect(roleToTags({ ...emptyRole(), kind: 'metrics' }, [])).toEqual(['pipeline-metrics']);
  });

  it('writes a new step with the notebook prefix and clears pipeline tags for none', () => {
    const role = { ...emptyRole(), kind: 'step' as const, step: 'a' };
    expect(roleToTags(role, [], 'block')).toEqual(['block:a']);
    expect(roleToTags(emptyRole(), ['step:a', 'prev:b', 'injected-parameters'])).toEqual([
      'injected-parameters'
    ]);
  });

  it('drops empty limits', () => {
    const role = {
      ...emptyRole(),
      kind: 'step' as const,
      step: 'a',
      limits: { cpu: '', memory: '1Gi' }
    };
    expect(roleToTags(role)).toEqual(['step:a', 'limit:memory:1Gi']);
  });
});

describe('renameStep', () => {
  it('renames the step tags and every prev: naming it, matching as the CLI does', () => {
    const cells = [
      ['step:load_data'],
      ['step:train', 'prev:load-data'],
      ['x'],
      ['step:eval', 'prev:train']
    ];
    const out = renameStep(cells, 'load_data', 'ingest');
    expect(out).toEqual([
      ['step:ingest'],
      ['step:train', 'prev:ingest'],
      ['x'],
      ['step:eval', 'prev:train']
    ]);
    // Unchanged cells keep their array (cheap change detection for the writer).
    expect(out[2]).toBe(cells[2]);
  });

  it('keeps block: spelling', () => {
    expect(renameStep([['block:a'], ['prev:a']], 'a', 'b')).toEqual([['block:b'], ['prev:b']]);
  });
});

describe('helpers', () => {
  it('kfpName normalizes like the CLI', () => {
    expect(kfpName('load_Data')).toBe('load-data');
    expect(kfpName('1st')).toBe('s-1st');
    expect(kfpName('__')).toBe('step');
  });

  it('lists tagged steps, picks the prefix, makes fresh names', () => {
    const cells = [['imports'], ['block:a'], ['block:b', 'prev:a'], ['block:a']];
    expect(taggedStepNames(cells)).toEqual(['a', 'b']);
    expect(stepPrefixOf(cells)).toBe('block');
    expect(stepPrefixOf([['imports']])).toBe('step');
    expect(freshStepName(['step-1', 'step_2'])).toBe('step-3');
  });
});
