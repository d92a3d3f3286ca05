const ALLOWED_METHODS = "GET, POST, HEAD, OPTIONS";
const ALLOWED_HEADERS = "Authorization, Content-Type, Accept, Prefer, Accept-Profile, Content-Profile, Range, Range-Unit, X-Request-Id";
const EXPOSED_HEADERS = "X-Request-Id, X-Cache, Content-Range, Retry-After, WWW-Authenticate, Preference-Applied";

const isPreflight = (request: Request) => request.method === "OPTIONS" && request.headers.has("access-control-request-method");

/**
 * CORS for browser clients of the allowed origins (`*` allows any; no cookies are used, so no
 * credentials). Not @elysiajs/cors: see docs/decisions/0005-gateway-libraries.md.
 */
export class Cors {
  private readonly any: boolean;
  private readonly origins: Set<string>;

  constructor(origins: string[]) {
    this.any = origins.includes("*");
    this.origins = new Set(origins);
  }

  private allowedOrigin(origin: string | null): string | undefined {
    if (!origin) return undefined;
    if (this.any) return "*";
    return this.origins.has(origin) ? origin : undefined;
  }

  /** The answer to a preflight request, or undefined when `request` is not one. */
  preflight(request: Request): Response | undefined {
    if (!isPreflight(request)) return undefined;
    const headers = new Headers({ Vary: "Origin" });
    const allowed = this.allowedOrigin(request.headers.get("origin"));
    if (allowed) {
      headers.set("Access-Control-Allow-Origin", allowed);
      headers.set("Access-Control-Allow-Methods", ALLOWED_METHODS);
      headers.set("Access-Control-Allow-Headers", ALLOWED_HEADERS);
      headers.set("Access-Control-Max-Age", "600");
    }
    return new Response(null, { status: 204, headers });
  }

  /** The CORS headers of an answer (a preflight's own answer has them already). */
  decorate(request: Request, headers: Headers) {
    if (isPreflight(request)) return;
    const allowed = this.allowedOrigin(request.headers.get("origin"));
    if (!allowed) return;
    headers.set("Access-Control-Allow-Origin", allowed);
    headers.set("Access-Control-Expose-Headers", EXPOSED_HEADERS);
    if (allowed !== "*") headers.append("Vary", "Origin");
  }
}
