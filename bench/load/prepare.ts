/**
 * Preparation through the API itself: accounts, sessions (access + refresh tokens) and a
 * tenant with a rule catalogue for the cacheable GET. Nothing here is measured.
 */
export interface Session {
  email: string;
  accessToken: string;
  refreshToken: string;
  userId: string;
}

export const LOAD_PASSWORD = "load-test-password";

async function call(api: string, fn: string, body: unknown, token?: string): Promise<{ status: number; json: any }> {
  const res = await fetch(`${api}/rpc/${fn}`, {
    method: "POST",
    headers: { "Content-Type": "application/json", ...(token ? { Authorization: `Bearer ${token}` } : {}) },
    body: JSON.stringify(body),
  });
  const text = await res.text();
  let json: any;
  try {
    json = JSON.parse(text);
  } catch {
    json = text;
  }
  return { status: res.status, json };
}

async function expectOk(api: string, fn: string, body: unknown, token?: string): Promise<any> {
  // The bcrypt routes answer 503 + Retry-After when the hashing slots are taken: wait and retry.
  for (let attempt = 0; ; attempt++) {
    const { status, json } = await call(api, fn, body, token);
    if (status >= 200 && status < 300) return json;
    if (status === 503 && attempt < 50) {
      await Bun.sleep(200);
      continue;
    }
    throw new Error(`${fn} answered ${status}: ${JSON.stringify(json)}`);
  }
}

/** Runs `work` over `items` with at most `limit` in flight. */
export async function mapLimit<T, R>(items: T[], limit: number, work: (item: T, index: number) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, items.length) }, async () => {
      while (next < items.length) {
        const i = next++;
        results[i] = await work(items[i]!, i);
      }
    }),
  );
  return results;
}

/** `count` new accounts (one bcrypt hash each at the server's cost). Returns their emails. */
export async function signUpUsers(api: string, count: number, concurrency: number): Promise<string[]> {
  const run = `${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`;
  const emails = Array.from({ length: count }, (_, i) => `load-${run}-${i}@example.com`);
  await mapLimit(emails, concurrency, (email, i) =>
    expectOk(api, "sign_up", { email, password: LOAD_PASSWORD, first_name: "Load", last_name: `User ${i}` }),
  );
  return emails;
}

/** `count` sessions, round-robin over `emails`. */
export async function signIn(api: string, emails: string[], count: number, concurrency: number): Promise<Session[]> {
  return mapLimit(Array.from({ length: count }, (_, i) => emails[i % emails.length]!), concurrency, async (email) => {
    const json = await expectOk(api, "sign_in", { email, password: LOAD_PASSWORD });
    return { email, accessToken: json.access_token, refreshToken: json.refresh_token, userId: json.user.id };
  });
}

/** A tenant owned by `session` with `rules` rules: the cacheable GET is /rpc/list_rules?tenant_id=…. */
export async function tenantWithRules(api: string, session: Session, rules: number): Promise<string> {
  const tenant = await expectOk(api, "create_tenant", { name: `Load Ltd ${Date.now()}` }, session.accessToken);
  const catalogue = Array.from({ length: rules }, (_, i) => ({
    key: `1.${Math.floor(i / 10)}.${i % 10}`,
    title: `Ensure control ${i} is configured`,
    severity: ["low", "medium", "high", "critical"][i % 4],
    description: `Rule ${i} of the load catalogue: a paragraph of text a real benchmark rule carries.`,
  }));
  await expectOk(api, "upsert_rules", { tenant_id: tenant.id, framework: "cis-m365", rules: catalogue }, session.accessToken);
  return tenant.id as string;
}
