/**
 * The fuzzy matching behind PostgREST's "Perhaps you meant …" hints: n-gram cosine
 * similarity (gram sizes 3 then 2, over the lower-cased name stripped to letters, digits,
 * spaces and commas and enclosed in hyphens), re-scored by normalised Levenshtein similarity
 * of the lower-cased names, keeping the best match at or above a minimum score.
 */

function normalized(s: string): string {
  return s.toLowerCase().replace(/[^\p{L}\p{N}\s,]/gu, "");
}

function gramVector(s: string, size: number): Map<string, number> {
  const padded = `-${normalized(s)}-`;
  const chars = Array.from(padded);
  const grams = new Map<string, number>();
  for (let i = 0; i + size <= chars.length; i++) {
    const g = chars.slice(i, i + size).join("");
    grams.set(g, (grams.get(g) ?? 0) + 1);
  }
  return grams;
}

function magnitude(v: Map<string, number>): number {
  let sum = 0;
  for (const c of v.values()) sum += c * c;
  return Math.sqrt(sum);
}

export function levenshteinSimilarity(a: string, b: string): number {
  const x = Array.from(a);
  const y = Array.from(b);
  const longest = Math.max(x.length, y.length);
  if (longest === 0) return 1;
  let prev = Array.from({ length: y.length + 1 }, (_, j) => j);
  for (let i = 1; i <= x.length; i++) {
    const cur = [i];
    for (let j = 1; j <= y.length; j++) {
      cur[j] = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (x[i - 1] === y[j - 1] ? 0 : 1));
    }
    prev = cur;
  }
  return 1 - prev[y.length]! / longest;
}

export class FuzzySet {
  private readonly entries: string[] = [];
  private readonly exact = new Map<string, string>();

  constructor(values: Iterable<string>) {
    for (const v of values) {
      const key = v.toLowerCase();
      if (this.exact.has(key)) continue;
      this.exact.set(key, v);
      this.entries.push(v);
    }
  }

  /** The best match scoring at least `minScore`, or undefined. */
  getOne(value: string, minScore: number): string | undefined {
    const key = value.toLowerCase();
    const exact = this.exact.get(key);
    if (exact !== undefined) return exact;
    for (const size of [3, 2]) {
      const query = gramVector(key, size);
      const qMag = magnitude(query);
      const scored: { score: number; entry: string }[] = [];
      for (const entry of this.entries) {
        const vec = gramVector(entry.toLowerCase(), size);
        let dot = 0;
        for (const [g, c] of query) dot += c * (vec.get(g) ?? 0);
        if (dot === 0) continue;
        scored.push({ score: dot / (qMag * magnitude(vec)), entry });
      }
      if (scored.length === 0) continue;
      scored.sort((a, b) => b.score - a.score);
      const rescored = scored.slice(0, 50)
        .map(({ entry }) => ({ score: levenshteinSimilarity(key, entry.toLowerCase()), entry }))
        .sort((a, b) => b.score - a.score)
        .filter((r) => r.score >= minScore);
      if (rescored.length > 0) return rescored[0]!.entry;
    }
    return undefined;
  }
}
