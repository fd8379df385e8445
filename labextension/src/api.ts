/**
 * The agentorch REST API (`<base_url>/agentorch/api/v1/`), typed.
 *
 * Every request goes through `ServerConnection.makeRequest`, which adds the
 * server's token and XSRF header.  An answer that is not 2xx becomes an
 * `ApiError` carrying the server's `message` (errors are JSON
 * `{"message", "reason"}`).
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

/** A run as `GET /runs` and `GET /runs/{id}` describe it. */
export interface IRun {
  id: string;
  store: string;
  objective: string;
  workspace: string | null;
  status: string;
  created_at: string | null;
  updated_at: string | null;
  finished_at: string | null;
  tasks: number;
  counts: { [status: string]: number };
  cost_usd: number;
  waiting: number;
  live: boolean;
  error: string | null;
  job: string | null;
  /** The batch job's executed notebook, relative to the server root. */
  notebook: string | null;
}

export interface IRunsPage {
  runs: IRun[];
  total: number;
  offset: number;
  limit: number;
  unavailable?: IUnavailable[];
}

/** A store the server could not read (it answers with the others). */
export interface IUnavailable {
  store: string;
  message: string;
}

/** A batch job: a papermill run of the packaged notebook the server started. */
export interface IJob {
  id: string;
  run_id: string;
  status: 'running' | 'completed' | 'failed' | string;
  workspace: string;
  notebook: string | null;
  started_at: string | null;
  finished_at: string | null;
  returncode: number | null;
  error: string | null;
}

export interface ITask {
  id: string;
  title: string;
  description: string | null;
  acceptance_criteria: string[];
  profile: string;
  status: string;
  status_reason: string | null;
  attempts: number;
  retries_used: number;
  max_retries: number;
  qa_feedback: string | null;
  guidance: string | null;
  result_summary: string | null;
  updated_at: string | null;
}

export interface IRunDetail {
  run: IRun;
  tasks: ITask[];
  dependencies: { task_id: string; depends_on: string }[];
}

/** A question for a human: one card of the human queue. */
export interface IInterrupt {
  id: string;
  run_id: string;
  store: string;
  task_id: string;
  task_title: string;
  objective?: string;
  kind: string;
  reason: string | null;
  ts: string | null;
  qa_feedback: string | null;
  description: string | null;
  acceptance_criteria: string[];
  attempts: number;
}

export interface INewRun {
  objective: string;
  workspace: string;
  model?: string;
  workers?: number;
}

export type Resolution =
  | {
      action: 'retry';
      description?: string;
      acceptance_criteria?: string[];
      guidance?: string;
    }
  | { action: 'abandon'; cascade: boolean }
  | {
      action: 'spawn';
      title: string;
      description?: string;
      acceptance_criteria?: string[];
    };

/** What a command sent to a run's engine became. */
export interface ICommandStatus {
  /** `applied`: the engine did it; `pending`: it will when it next runs. */
  status: 'applied' | 'pending' | string;
}

/** A refusal or failure of the API, with the server's own message. */
export class ApiError extends Error {
  constructor(
    message: string,
    readonly status: number,
    readonly reason: string | null = null
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

/** The text to show for an error thrown by a request. */
export function errorMessage(error: unknown): string {
  if (error instanceof ApiError) {
    return error.message;
  }
  if (error instanceof ServerConnection.NetworkError) {
    return `The server is not reachable: ${error.message}`;
  }
  if (error instanceof Error) {
    return error.message;
  }
  return String(error);
}

const API = 'agentorch/api/v1';

/** A client of the agentorch REST API of one Jupyter server. */
export class AgentorchAPI {
  constructor(
    readonly settings: ServerConnection.ISettings = ServerConnection.makeSettings()
  ) {}

  listRuns(offset = 0, limit = 100): Promise<IRunsPage> {
    return this.request<IRunsPage>(`runs?offset=${offset}&limit=${limit}`);
  }

  getRun(runId: string): Promise<IRunDetail> {
    return this.request<IRunDetail>(`runs/${enc(runId)}`);
  }

  startRun(body: INewRun): Promise<{ job: IJob }> {
    return this.request<{ job: IJob }>('runs', 'POST', body);
  }

  cancel(runId: string): Promise<ICommandStatus> {
    return this.request<ICommandStatus>(`runs/${enc(runId)}/cancel`, 'POST', {});
  }

  replan(runId: string): Promise<ICommandStatus> {
    return this.request<ICommandStatus>(`runs/${enc(runId)}/replan`, 'POST', {});
  }

  restart(runId: string): Promise<{ job: IJob }> {
    return this.request<{ job: IJob }>(`runs/${enc(runId)}/restart`, 'POST', {});
  }

  /** The path of a notebook that shows the run's dashboard (written on demand). */
  dashboard(runId: string): Promise<{ path: string }> {
    return this.request<{ path: string }>(
      `runs/${enc(runId)}/dashboard`,
      'POST',
      {}
    );
  }

  interrupts(): Promise<{ interrupts: IInterrupt[]; unavailable?: IUnavailable[] }> {
    return this.request('interrupts');
  }

  resolve(
    runId: string,
    taskId: string,
    resolution: Resolution
  ): Promise<ICommandStatus> {
    return this.request<ICommandStatus>(
      `runs/${enc(runId)}/tasks/${enc(taskId)}/resolve`,
      'POST',
      resolution
    );
  }

  abandon(runId: string, taskId: string, cascade: boolean): Promise<ICommandStatus> {
    return this.request<ICommandStatus>(
      `runs/${enc(runId)}/tasks/${enc(taskId)}?cascade=${cascade}`,
      'DELETE'
    );
  }

  interrupt(runId: string, taskId: string): Promise<ICommandStatus> {
    return this.request<ICommandStatus>(
      `runs/${enc(runId)}/tasks/${enc(taskId)}/interrupt`,
      'POST',
      {}
    );
  }

  private async request<T>(
    endpoint: string,
    method: 'GET' | 'POST' | 'DELETE' = 'GET',
    body?: unknown
  ): Promise<T> {
    const url = URLExt.join(this.settings.baseUrl, API, endpoint);
    const init: RequestInit = { method };
    if (body !== undefined) {
      init.body = JSON.stringify(body);
      init.headers = { 'Content-Type': 'application/json' };
    }
    const response = await ServerConnection.makeRequest(url, init, this.settings);
    const text = await response.text();
    let data: unknown = null;
    if (text) {
      try {
        data = JSON.parse(text);
      } catch {
        data = null;
      }
    }
    if (!response.ok) {
      const fields = (data ?? {}) as { message?: unknown; reason?: unknown };
      const message =
        typeof fields.message === 'string' && fields.message
          ? fields.message
          : `${response.status} ${response.statusText || 'error'} from ${method} /${API}/${endpoint}`;
      const reason = typeof fields.reason === 'string' ? fields.reason : null;
      throw new ApiError(message, response.status, reason);
    }
    return data as T;
  }
}

function enc(segment: string): string {
  return encodeURIComponent(segment);
}
