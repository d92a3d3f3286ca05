/**
 * Headers every answer carries. The API answers JSON, so by default nothing may be framed,
 * sniffed into another type, or load anything; pages (Swagger UI) set a CSP of their own that
 * their local assets satisfy (docs.ts).
 */
const API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

export function securityHeaders(headers: Headers): void {
  headers.set("X-Content-Type-Options", "nosniff");
  headers.set("Referrer-Policy", "no-referrer");
  headers.set("X-Frame-Options", "DENY");
  if (!headers.has("content-security-policy")) headers.set("Content-Security-Policy", API_CSP);
  // Answers are per caller: no shared or browser cache may keep them unless the route says so.
  if (!headers.has("cache-control")) headers.set("Cache-Control", "no-store");
}
