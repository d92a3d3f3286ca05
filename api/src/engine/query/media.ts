/**
 * Accept negotiation for reads: the media types PostgREST offers for a table, view or
 * set-returning function that this engine implements (its decodeMediaType rules, including
 * `nulls=stripped` on the vendor types), and its PGRST107 otherwise.
 */
import { ApiError } from "../errors";
import type { BodyShape } from "./sql";

export interface ReadMedia {
  shape: Exclude<BodyShape, "none">;
  contentType: string;
  /** `nulls=stripped`: the body goes through json_strip_nulls. */
  stripNulls: boolean;
}

const JSON_MEDIA: ReadMedia = { shape: "json", contentType: "application/json; charset=utf-8", stripNulls: false };
const JSON_STRIPPED: ReadMedia = { shape: "json", contentType: "application/vnd.pgrst.array+json;nulls=stripped; charset=utf-8", stripNulls: true };
const SINGLE_MEDIA: ReadMedia = { shape: "single", contentType: "application/vnd.pgrst.object+json; charset=utf-8", stripNulls: false };
const SINGLE_STRIPPED: ReadMedia = { shape: "single", contentType: "application/vnd.pgrst.object+json;nulls=stripped; charset=utf-8", stripNulls: true };
const CSV_MEDIA: ReadMedia = { shape: "csv", contentType: "text/csv; charset=utf-8", stripNulls: false };

function mediaFor(type: string, params: string[]): ReadMedia | null {
  const stripped = params.length === 1 && params[0] === "nulls=stripped";
  switch (type) {
    case "*/*":
    case "application/json":
      return JSON_MEDIA;
    case "application/vnd.pgrst.array+json":
    case "application/vnd.pgrst.array":
      return stripped ? JSON_STRIPPED : JSON_MEDIA;
    case "application/vnd.pgrst.object+json":
    case "application/vnd.pgrst.object":
      return stripped ? SINGLE_STRIPPED : SINGLE_MEDIA;
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
      const [type = "", ...rest] = part.split(";").map((s) => s.trim());
      const q = rest.map((p) => /^q=([0-9.]+)$/i.exec(p)).find((m) => m !== null);
      const params = rest.filter((p) => !/^q=/i.test(p) && p !== "");
      return { type: type.toLowerCase(), raw: type, params, q: q ? Number(q[1]) : 1, i };
    })
    .filter((m) => m.type !== "");
  const ranked = [...offered].filter((m) => m.q > 0).sort((a, b) => b.q - a.q || a.i - b.i);
  for (const m of ranked) {
    const media = mediaFor(m.type, m.params);
    if (media) return media;
  }
  throw new ApiError(406, "PGRST107", `None of these media types are available: ${offered.map((m) => m.raw).join(", ")}`);
}
