/**
 * The contract's types under the names the views use. Everything comes from the generated
 * `types.ts` (scripts/gen_ts_types.py, from the server's pydantic models), so a change of the
 * models that the views do not follow fails `tsc`.
 */
export type {
  AnalyzeRequest,
  AnalyzeResponse,
  CompileRequest,
  Definition,
  Diagnostic,
  Edge,
  Info as InfoResponse,
  Parameter,
  Pipeline,
  PlanItem as PlanEntry,
  Severity,
  Step
} from './types';

export type SplitMode = 'tags' | 'headings' | 'cells';
