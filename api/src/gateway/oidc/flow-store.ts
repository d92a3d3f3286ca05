import type { RedisLink } from "../redis";

/** What /auth/authorize remembers for /auth/callback, keyed by `state`. */
export interface PendingSignIn {
  provider: string;
  /** Our PKCE verifier with the provider (never leaves the server). */
  codeVerifier: string;
  nonce: string;
  redirectTo: string;
  /** The app's S256 challenge: the one-time code is bound to it. */
  appCodeChallenge: string;
  /** The redirect_uri sent to the provider (sent again with the code). */
  callbackUrl: string;
}

/**
 * Pending sign-ins, server side: in Redis when configured (any instance may receive the
 * callback), else in this process. Each is taken once (GETDEL) and expires after `ttlSeconds`.
 */
export interface FlowStore {
  put(state: string, pending: PendingSignIn, ttlSeconds: number): Promise<void>;
  take(state: string): Promise<PendingSignIn | undefined>;
}

const PREFIX = "oidc:state:";

export class RedisFlowStore implements FlowStore {
  constructor(private readonly redis: RedisLink) {}

  async put(state: string, pending: PendingSignIn, ttlSeconds: number): Promise<void> {
    await this.redis.client.set(PREFIX + state, JSON.stringify(pending), "EX", ttlSeconds);
  }

  async take(state: string): Promise<PendingSignIn | undefined> {
    const raw = await this.redis.client.getdel(PREFIX + state);
    return raw ? (JSON.parse(raw) as PendingSignIn) : undefined;
  }
}

export class MemoryFlowStore implements FlowStore {
  private readonly pending = new Map<string, { value: PendingSignIn; expiresAt: number }>();

  constructor(private readonly max = 10_000) {}

  async put(state: string, pending: PendingSignIn, ttlSeconds: number): Promise<void> {
    const now = Date.now();
    for (const [key, entry] of this.pending) {
      if (entry.expiresAt > now && this.pending.size < this.max) break;
      this.pending.delete(key);
    }
    this.pending.set(state, { value: pending, expiresAt: now + ttlSeconds * 1000 });
  }

  async take(state: string): Promise<PendingSignIn | undefined> {
    const entry = this.pending.get(state);
    this.pending.delete(state);
    return entry && entry.expiresAt > Date.now() ? entry.value : undefined;
  }
}
