/**
 * Errors in PostgREST's shape. Every client-visible failure of the engine (and of the
 * gateway, which reuses this) is one of these: `{code, details, hint, message}`, keys in that
 * order on the wire, with PostgREST's status and headers.
 */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly details: string | null = null,
    readonly hint: string | null = null,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }

  body(): string {
    return JSON.stringify({ code: this.code, details: this.details, hint: this.hint, message: this.message });
  }

  toResponse(extraHeaders: Record<string, string> = {}): Response {
    const body = this.body();
    return new Response(body, {
      status: this.status,
      headers: {
        "Content-Type": "application/json; charset=utf-8",
        "Content-Length": String(Buffer.byteLength(body)),
        ...this.headers,
        ...extraHeaders,
      },
    });
  }
}
