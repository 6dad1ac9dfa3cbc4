/**
 * The one helper that talks to the server extension (`/jupyter-pipeline/...`). Errors come back
 * as `ApiError` carrying the server's `{code, message, details}`; a route that does not exist
 * (no or an old server extension) is an `ApiError` with code `server-extension-missing`.
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

/** The REST API version this lab extension speaks (compared with `GET info`'s `api_version`). */
export { API_VERSION } from './types';

/** The namespace of the server extension's routes. */
export const API_NAMESPACE = 'jupyter-pipeline';

/** What to tell a user whose server extension is missing or older than this lab extension. */
export const INSTALL_HINT = 'pip install --upgrade jupyter-pipeline, then restart jupyter lab';

/** An error answer of the server extension (or no answer at all). */
export class ApiError extends Error {
  constructor(
    message: string,
    readonly code: string,
    readonly status: number,
    readonly details?: unknown
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

/**
 * Call `endpoint` of the server extension. JSON answers are parsed; other answers (the compiled
 * YAML) are returned as text.
 *
 * @param endpoint - path under `/jupyter-pipeline/`, e.g. `info` or `runs/abc`.
 * @param init - fetch options (method, body).
 */
export async function requestAPI<T = unknown>(
  endpoint = '',
  init: RequestInit = {},
  settings: ServerConnection.ISettings = ServerConnection.makeSettings()
): Promise<T> {
  const url = URLExt.join(settings.baseUrl, API_NAMESPACE, endpoint);
  let response: Response;
  try {
    response = await ServerConnection.makeRequest(url, init, settings);
  } catch (error) {
    throw new ApiError(`the Jupyter server cannot be reached (${error})`, 'network', 0);
  }
  const text = await response.text();
  const type = response.headers.get('Content-Type') ?? '';
  let data: any = text;
  if (text && type.includes('json')) {
    try {
      data = JSON.parse(text);
    } catch {
      // Not JSON after all: keep the text (a proxy's HTML error page, say).
    }
  }
  if (!response.ok) {
    if (response.status === 404 && !(data && typeof data === 'object' && 'code' in data)) {
      throw new ApiError(
        `server extension missing or outdated: ${INSTALL_HINT}`,
        'server-extension-missing',
        404
      );
    }
    const message =
      data && typeof data === 'object' && data.message
        ? data.message
        : `${response.status} ${response.statusText}`;
    const code = data && typeof data === 'object' && data.code ? data.code : 'http-error';
    throw new ApiError(message, code, response.status, data?.details);
  }
  return data as T;
}
