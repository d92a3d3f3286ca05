import { randomBytes } from "node:crypto";
import { startEmbeddedPostgres, type RunningPostgres } from "../../api/src/stack/embedded-postgres";
import { authenticatorUrl, dbmate, setAuthenticatorPassword } from "../../api/src/stack/migrate";
import { startRedisServer, type RunningRedis } from "../../api/src/stack/redis-server";
import postgres from "postgres";

/** Cheap bcrypt in tests; one test proves the production default is 12. */
export const TEST_BCRYPT_COST = 4;

export interface TestStack {
  /** Superuser URL of the migrated database. */
  databaseUrl: string;
  /** The same database as the authenticator (what PostgREST and the engine use). */
  authenticatorUrl: string;
  redisUrl: string;
  /** The embedded cluster, when this run started one (undefined with DATABASE_URL). */
  postgres?: RunningPostgres;
  /** The redis-server this run started (undefined with REDIS_URL). */
  redis?: RunningRedis;
  /** True when the suites run against a stack someone else started (DATABASE_URL / API_URL). */
  external: boolean;
  stop(): Promise<void>;
}

let current: TestStack | undefined;

/** The stack the preload started. Test files call this; it never starts a second one. */
export function testStack(): TestStack {
  if (!current) throw new Error("the test stack is not running: is tests/support/preload.ts preloaded (bunfig.toml)?");
  return current;
}

export async function startTestStack(): Promise<TestStack> {
  if (current) return current;
  const externalDb = process.env.DATABASE_URL;
  const pg = externalDb ? undefined : await startEmbeddedPostgres({ database: "autoaudit_test" });
  const databaseUrl = externalDb ?? pg!.url;
  const password = process.env.AUTHENTICATOR_PASSWORD ?? randomBytes(24).toString("base64url");

  if (!externalDb) {
    await dbmate(databaseUrl, "up");
    await setAuthenticatorPassword(databaseUrl, password);
    const admin = postgres(databaseUrl, { max: 1, onnotice: () => {} });
    await admin.unsafe(`alter database autoaudit_test set autoaudit.bcrypt_cost = ${TEST_BCRYPT_COST}`);
    await admin.end();
  }

  const externalRedis = process.env.REDIS_URL;
  const redis = externalRedis ? undefined : await startRedisServer();

  current = {
    databaseUrl,
    authenticatorUrl: authenticatorUrl(databaseUrl, password),
    redisUrl: externalRedis ?? redis!.url,
    postgres: pg,
    redis,
    external: Boolean(externalDb),
    async stop() {
      await redis?.stop();
      await pg?.stop();
      current = undefined;
    },
  };
  return current;
}
