/**
 * Accept negotiation for reads: the media types PostgREST offers for a table, view or
 * set-returning function that this engine implements, and its PGRST107 otherwise.
 */
import { ApiError } from "../errors";
import type { BodyShape } from "./sql";

export interface ReadMedia {
  shape: Exclude<BodyShape, "none">;
  contentType: string;
}

const JSON_MEDIA: ReadMedia = { shape: "json", contentType: "application/json; charset=utf-8" };
const SINGLE_MEDIA: ReadMedia = { shape: "single", contentType: "application/vnd.pgrst.object+json; charset=utf-8" };
const CSV_MEDIA: ReadMedia = { shape: "csv", contentType: "text/csv; charset=utf-8" };

function mediaFor(type: string): ReadMedia | null {
  switch (type) {
    case "*/*":
    case "application/json":
      return JSON_MEDIA;
    case "application/vnd.pgrst.object+json":
    case "application/vnd.pgrst.object":
      return SINGLE_MEDIA;
    case "text/csv":
      return CSV_MEDIA;
    default:
      return null;
  }
}

/** The first acceptable type in client preference order (q-values, then header order). */
export function negotiateRead(accept: string | null): ReadMedia {
  if (accept === null || accept.trim() === "") return JSON_MEDIA;
  const offered = accept
    .split(",")
    .map((part, i) => {
      const [type = "", ...params] = part.split(";").map((s) => s.trim());
      const q = params.map((p) => /^q=([0-9.]+)$/i.exec(p)).find((m) => m !== null);
      return { type: type.toLowerCase(), raw: type, q: q ? Number(q[1]) : 1, i };
    })
    .filter((m) => m.type !== "");
  const ranked = [...offered].filter((m) => m.q > 0).sort((a, b) => b.q - a.q || a.i - b.i);
  for (const m of ranked) {
    const media = mediaFor(m.type);
    if (media) return media;
  }
  throw new ApiError(406, "PGRST107", `None of these media types are available: ${offered.map((m) => m.raw).join(", ")}`);
}
