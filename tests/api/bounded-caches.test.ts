// The gateway's in-process caches are bounded (lru-cache): what falls out for room is asked
// again, never answered wrongly.
import { describe, expect, test } from "bun:test";
import { jwtVerifications } from "../../api/src/engine/jwt";
import { JwtService } from "../../api/src/gateway/jwt";
import { SessionGuard } from "../../api/src/gateway/sessions";

const SECRET = "bounded-caches-test-secret-of-at-least-32-chars";

/** How many times the gateway verifies a signature while `run` runs (the cache answers the rest). */
async function verificationsDuring(run: () => Promise<unknown>): Promise<number> {
  let count = 0;
  const listener = (message: unknown) => {
    if ((message as { verifier?: string }).verifier === "gateway") count++;
  };
  jwtVerifications.subscribe(listener);
  try {
    await run();
  } finally {
    jwtVerifications.unsubscribe(listener);
  }
  return count;
}

describe("verified tokens", () => {
  test("at most verifiedCacheMax are remembered; one pushed out is verified again, with the same claims", async () => {
    const jwt = new JwtService(SECRET, undefined, 3600, 2);
    const user = (n: number) => ({ id: `00000000-0000-4000-8000-00000000000${n}`, email: `u${n}@example.com` });
    const assurance = { aal: "aal1" as const, amr: [] };
    const [a, b, c] = await Promise.all([1, 2, 3].map(async (n) => (await jwt.mintAccessToken(user(n), `s${n}`, assurance)).token));
    expect(await verificationsDuring(() => Promise.all([jwt.verify(a!), jwt.verify(b!)]))).toBe(2);
    expect(await verificationsDuring(async () => (await jwt.verify(b!), await jwt.verify(a!)))).toBe(0); // a is the most recent
    expect(await verificationsDuring(() => jwt.verify(c!))).toBe(1); // b, least recently used, goes
    expect(await verificationsDuring(() => jwt.verify(a!))).toBe(0);
    let claims: unknown;
    expect(await verificationsDuring(async () => (claims = await jwt.verify(b!)))).toBe(1);
    expect(claims).toMatchObject({ sub: user(2).id, sid: "s2" });
  });
});

describe("session states", () => {
  function guard(localMax: number) {
    const asked: string[] = [];
    const revokedInDb = new Set<string>();
    const sessions = new SessionGuard(
      undefined,
      async (token) => {
        asked.push(token);
        return !revokedInDb.has(token);
      },
      { localTtlMs: 60_000, redisActiveTtlSeconds: 60, revokedTtlSeconds: 600, localMax },
    );
    return { sessions, asked, revokedInDb };
  }

  test("a revocation pushed out of the local set for room is still refused: the database is asked", async () => {
    const { sessions, asked, revokedInDb } = guard(2);
    for (const sid of ["s1", "s2", "s3"]) {
      revokedInDb.add(`token-${sid}`);
      sessions.revokedInDatabase(sid);
    }
    // s2 and s3 are remembered; s1 fell out and is looked up, and the database says revoked.
    expect(await sessions.isActive("s3", "u", "token-s3")).toBe(false);
    expect(asked).toEqual([]);
    expect(await sessions.isActive("s1", "u", "token-s1")).toBe(false);
    expect(asked).toEqual(["token-s1"]);
  });

  test("at most localMax active sessions are trusted without asking", async () => {
    const { sessions, asked } = guard(2);
    for (const sid of ["s1", "s2", "s3"]) sessions.markActive(sid, "u");
    expect(await sessions.isActive("s3", "u", "token-s3")).toBe(true);
    expect(await sessions.isActive("s2", "u", "token-s2")).toBe(true);
    expect(asked).toEqual([]);
    expect(await sessions.isActive("s1", "u", "token-s1")).toBe(true);
    expect(asked).toEqual(["token-s1"]);
    // Trusted for its own user only.
    expect(await sessions.isActive("s2", "other", "token-other")).toBe(true);
    expect(asked).toEqual(["token-s1", "token-other"]);
  });
});
