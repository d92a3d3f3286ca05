// The actions audit-trail.test.ts does not cover, each through its real path (HTTP through the
// API, or the worker's own SQL functions as scan_worker), and the compliance reads' bad input.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { randomUUID } from "node:crypto";
import { call, newUser, signIn, signUp, signedInUser } from "../api/helpers";
import { linkToken, STRONG, waitForMails } from "../accounts/support";
import { adminSql, DEMO_RULES, findings } from "../compliance/support";

const sql = adminSql(4);
// Every request here comes from one loopback address: lift the per-client reset limit.
beforeAll(async () => {
  await sql`insert into auth.settings (name, value) values ('reset_per_client_max', '100000')
            on conflict (name) do update set value = excluded.value`;
});
afterAll(async () => {
  await sql`delete from auth.settings where name = 'reset_per_client_max'`;
  await sql.end();
});

const traced = () => ({ "X-Request-Id": randomUUID(), "User-Agent": `audit-test/${randomUUID().slice(0, 8)}` });
type Traced = ReturnType<typeof traced>;

/** The events a request recorded, asserting it answered with the request id it was sent. */
async function eventsOf(h: Traced) {
  return sql`select * from audit.events where request_id = ${h["X-Request-Id"]} order by id`;
}

/** The address the gateway saw for this test process (what every event of ours must carry). */
let clientAddress: string;
beforeAll(async () => {
  const h = traced();
  await call("/rpc/sign_up", { body: { ...newUser(), first_name: "A", last_name: "B" }, headers: h });
  const [e] = await eventsOf(h);
  clientAddress = e!.client;
  expect(clientAddress).toMatch(/^(127\.0\.0\.1|::1|::ffff:127\.0\.0\.1)$/);
});

/** Exactly one event, with this action, actor, tenant, account and the request's context. */
async function expectOneEvent(h: Traced, want: { action: string; actor: string | null; tenant?: string | null; user?: string | null }) {
  const rows = await eventsOf(h);
  expect(rows.map((r) => r.action)).toEqual([want.action]);
  const e = rows[0]!;
  expect({ actor: e.actor, tenant: e.tenant_id, user: e.user_id, client: e.client, agent: e.user_agent }).toEqual({
    actor: want.actor, tenant: want.tenant ?? null, user: want.user === undefined ? want.actor : want.user,
    client: clientAddress, agent: h["User-Agent"],
  });
  expect(e.chain).toBe(want.tenant ?? "account");
  return e;
}

describe("account actions", () => {
  test("email verified, password changed, reset requested, password reset", async () => {
    const user = newUser();
    const up = await signUp(user);
    const userId = up.json.id as string;

    let h = traced();
    const token = linkToken((await waitForMails(user.email, /Confirm your email/))[0]!, "/verify-email");
    expect((await call("/rpc/verify_email", { body: { token }, headers: h })).status).toBe(200);
    // anonymous: the link is the proof, so the actor is the account itself
    await expectOneEvent(h, { action: "email_verified", actor: userId });

    const session = await signIn(user);
    h = traced();
    const changedTo = STRONG();
    const changed = await call("/rpc/change_password", {
      token: session.access_token, headers: h, body: { current_password: user.password, new_password: changedTo },
    });
    expect(changed.status).toBe(200);
    const e = await expectOneEvent(h, { action: "password_changed", actor: userId });
    expect(JSON.stringify(e.details)).not.toContain(changedTo);
    expect(e.session_id).toBe(JSON.parse(atob(session.access_token.split(".")[1]!)).sid);

    h = traced();
    expect((await call("/rpc/request_password_reset", { body: { email: user.email }, headers: h })).status).toBe(200);
    await expectOneEvent(h, { action: "password_reset_requested", actor: null, user: userId });

    // an unknown address: an event nobody can read through the API (no account), same answer
    h = traced();
    expect((await call("/rpc/request_password_reset", { body: { email: `nobody-${randomUUID()}@example.com` }, headers: h })).status).toBe(200);
    await expectOneEvent(h, { action: "password_reset_requested", actor: null, user: null });

    const resetToken = linkToken((await waitForMails(user.email, /Reset your password/))[0]!, "/reset-password");
    h = traced();
    const newPassword = STRONG();
    expect((await call("/rpc/reset_password", { body: { token: resetToken, new_password: newPassword }, headers: h })).status).toBe(200);
    const reset = await expectOneEvent(h, { action: "password_reset", actor: userId });
    expect(JSON.stringify(reset.details)).not.toContain(newPassword);
    expect(JSON.stringify(reset.details)).not.toContain(resetToken);
  });

  test("refresh reuse detected: one event on the session, the 401 answer unchanged", async () => {
    const user = newUser();
    const userId = (await signUp(user)).json.id as string;
    const tokens = await signIn(user);
    const sid = JSON.parse(atob(tokens.access_token.split(".")[1]!)).sid as string;
    expect((await call("/rpc/issue_token", { body: { refresh_token: tokens.refresh_token } })).status).toBe(200);
    await sql`update auth.refresh_tokens set retired_at = retired_at - interval '11 seconds' where token_hash = auth.token_digest(${tokens.refresh_token})`;
    const h = traced();
    const reuse = await call("/rpc/issue_token", { body: { refresh_token: tokens.refresh_token }, headers: h });
    expect(reuse.status).toBe(401);
    expect(reuse.json.message).toBe("refresh token reuse detected; the session was revoked");
    const e = await expectOneEvent(h, { action: "refresh_reuse_detected", actor: userId });
    expect([e.target, e.session_id]).toEqual([sid, sid]);
  });

  test("a throttled sign-in is recorded and answered 429 exactly as the raised PT429 was", async () => {
    const user = newUser();
    const userId = (await signUp(user)).json.id as string;
    for (let i = 0; i < 5; i++) {
      expect((await call("/rpc/sign_in", { body: { email: user.email, password: `wrong-${i}` } })).status).toBe(401);
    }
    const h = traced();
    const limited = await call("/rpc/sign_in", { body: { email: user.email, password: user.password }, headers: h });
    expect(limited.status).toBe(429);
    expect(limited.text).toBe('{"code":"PT429","details":null,"hint":"Retry after 1 seconds.","message":"too many failed sign-ins"}');
    expect(limited.headers.get("retry-after")).toBe("1");
    expect(limited.headers.get("proxy-status")).toBe("PostgREST; error=PT429");
    expect(limited.headers.get("content-type")).toBe("application/json; charset=utf-8");
    expect(limited.headers.get("x-request-id")).toBe(h["X-Request-Id"]);
    const e = await expectOneEvent(h, { action: "sign_in_throttled", actor: null, user: userId });
    expect(e.details).toEqual({ scope: "address", retry_after: 1 });
    expect(JSON.stringify(e)).not.toContain(user.password);
    // the owner reads it among their own events
    await Bun.sleep(1100);
    const mine = await call("/rpc/my_security_events", { token: (await signIn(user)).access_token });
    expect(mine.json.events.map((x: any) => x.action).slice(0, 3)).toEqual(["sign_in_succeeded", "sign_in_throttled", "sign_in_failed"]);
  });

  test("the account ceiling's refusal is recorded with its scope, and leaves the throttle as it was", async () => {
    const user = newUser();
    const userId = (await signUp(user)).json.id as string;
    const [row] = await sql`select auth.normalize_email(${user.email}) as email`;
    const email = row!.email as string;
    const answer = await sql.begin(async (tx) => {
      await tx`set local role anon`;
      await tx`select set_config('request.headers', ${JSON.stringify({ "x-forwarded-for": "192.0.2.77", "x-request-id": "ceiling-" + userId })}, true),
                      set_config('autoaudit.sign_in_account_ceiling', '1', true)`;
      // one failure from another address fills the ceiling of 1
      await tx`reset role`;
      await tx`insert into auth.sign_in_throttle (email, client, failures, window_started_at) values (${email}, '192.0.2.76', 1, now())`;
      await tx`set local role anon`;
      const [r] = await tx`select api.sign_in(${user.email}, ${user.password})::text as body, current_setting('response.status', true) as status`;
      return r!;
    });
    expect(answer.status).toBe("429");
    expect(JSON.parse(answer.body)).toMatchObject({ code: "PT429", message: "too many failed sign-ins" });
    const events = await sql`select * from audit.events where request_id = ${"ceiling-" + userId}`;
    expect(events.map((e) => [e.action, e.user_id, e.client, e.details.scope])).toEqual([["sign_in_throttled", userId, "192.0.2.77", "account"]]);
    expect((await sql`select client from auth.sign_in_throttle where email = ${email} order by client`).map((r) => r.client)).toEqual(["192.0.2.76"]);
  });

  test("an unknown address throttled: recorded without an account, answered like a known one", async () => {
    const email = `unknown-${randomUUID()}@example.com`;
    for (let i = 0; i < 5; i++) expect((await call("/rpc/sign_in", { body: { email, password: "wrong" } })).status).toBe(401);
    const h = traced();
    const limited = await call("/rpc/sign_in", { body: { email, password: "wrong" }, headers: h });
    expect(limited.status).toBe(429);
    expect(limited.text).toBe('{"code":"PT429","details":null,"hint":"Retry after 1 seconds.","message":"too many failed sign-ins"}');
    await expectOneEvent(h, { action: "sign_in_throttled", actor: null, user: null });
  });
});

describe("tenant actions", () => {
  async function tenantOf(admin: Awaited<ReturnType<typeof signedInUser>>) {
    const tenant = await call("/rpc/create_tenant", { token: admin.access_token, body: { name: "Actions Co" } });
    const tenantId = tenant.json.id as string;
    expect((await call("/rpc/upsert_rules", { token: admin.access_token, body: { tenant_id: tenantId, framework: "cis-m365", rules: DEMO_RULES } })).status).toBe(200);
    return tenantId;
  }

  test("invitation declined", async () => {
    const admin = await signedInUser();
    const invitee = await signedInUser();
    const tenantId = await tenantOf(admin);
    expect((await call("/rpc/add_member", { token: admin.access_token, body: { tenant_id: tenantId, email: invitee.email, role: "viewer" } })).status).toBe(200);
    const h = traced();
    expect((await call("/rpc/decline_invitation", { token: invitee.access_token, headers: h, body: { tenant_id: tenantId } })).status).toBe(200);
    const e = await expectOneEvent(h, { action: "invitation_declined", actor: invitee.user.id, tenant: tenantId, user: null });
    expect(e.target).toBe(invitee.email);
  });

  test("scan requested through the API; job finished and job failed by the worker's functions", async () => {
    const admin = await signedInUser();
    const tenantId = await tenantOf(admin);
    const request = async () => {
      const h = traced();
      const job = await call("/rpc/request_scan", { token: admin.access_token, headers: h, body: { tenant_id: tenantId, framework: "cis-m365" } });
      expect(job.status).toBe(200);
      const e = await expectOneEvent(h, { action: "scan_requested", actor: admin.user.id, tenant: tenantId, user: null });
      expect(e.target).toBe(job.json.id);
      return job.json.id as string;
    };
    const asWorker = <T>(work: (tx: any) => Promise<T>) =>
      sql.begin(async (tx) => {
        await tx`set local role scan_worker`;
        return work(tx);
      }) as Promise<T>;
    const start = (job: string) =>
      asWorker(async (tx) => (await tx`select compliance.start_scan_job(${job}, 'audit-test-worker', interval '30 seconds') as r`)[0].r);
    const jobEvents = (job: string) => sql`select * from audit.events where target = ${job} and action like 'job_%'`;

    const done = await request();
    const started = await start(done);
    expect(started.outcome).toBe("started");
    await asWorker((tx) => tx`select compliance.finish_scan_job(${done}, ${started.lease}, ${sql.json(findings(["pass", "fail", "pass", "pass", "fail", "pass"]))}, now())`);
    const [finished, ...moreFinished] = await jobEvents(done);
    expect(moreFinished).toHaveLength(0);
    // the worker acts for nobody and from nowhere: no actor, address or request id
    expect([finished!.action, finished!.actor, finished!.tenant_id, finished!.client, finished!.request_id]).toEqual(["job_finished", null, tenantId, "", null]);
    expect(finished!.details).toMatchObject({ framework: "cis-m365", attempts: 1, worker: "audit-test-worker" });
    // the scan the worker recorded is part of job_finished, not another event
    expect(await sql`select action from audit.events where chain = ${tenantId} and action = 'scan_submitted'`).toHaveLength(0);

    const failing = await request();
    let attempt = await start(failing);
    // a retry is not the end of the job
    await asWorker((tx) => tx`select compliance.fail_scan_job(${failing}, ${attempt.lease}, 'scanner crashed', true)`);
    expect(await jobEvents(failing)).toHaveLength(0);
    attempt = await start(failing);
    await asWorker((tx) => tx`select compliance.fail_scan_job(${failing}, ${attempt.lease}, 'scanner crashed', false)`);
    const failed = await jobEvents(failing);
    expect(failed.map((e) => [e.action, e.actor, e.tenant_id, e.details.attempts])).toEqual([["job_failed", null, tenantId, 2]]);

    const verified = await call("/rpc/verify_audit_trail", { token: admin.access_token, body: { tenant_id: tenantId } });
    expect(verified.json).toMatchObject({ ok: true, first_broken_id: null });
  });
});

describe("reading the trail", () => {
  test("pages walked while events are added have no gaps or repeats", async () => {
    const user = await signedInUser();
    const admin = await signedInUser();
    const tenant = await call("/rpc/create_tenant", { token: admin.access_token, body: { name: "Paging Co" } });
    const tenantId = tenant.json.id as string;
    for (let i = 0; i < 5; i++) {
      await signIn(user);
      await call("/rpc/upsert_rules", { token: admin.access_token, body: { tenant_id: tenantId, framework: `fw-${i}`, rules: DEMO_RULES } });
    }
    const walk = async (path: string, token: string, body: Record<string, unknown>, addOne: () => Promise<unknown>) => {
      const seen: number[] = [];
      let before: number | null = null;
      let first = true;
      let snapshot: number[] = [];
      do {
        const page: any = await call(path, { token, body: { ...body, page_size: 2, before } });
        expect(page.status).toBe(200);
        if (first) {
          first = false;
          snapshot = page.json.events.map((e: any) => e.id);
        }
        seen.push(...page.json.events.map((e: any) => e.id));
        before = page.json.next_before;
        await addOne(); // a new event between every two pages
      } while (before !== null);
      return { seen, snapshot };
    };
    const mine = await walk("/rpc/my_security_events", user.access_token, {}, () => signIn(user));
    const expected = await sql`select id from audit.events where user_id = ${user.user.id} and chain = 'account' and id <= ${mine.snapshot[0]!} order by id desc`;
    expect(mine.seen).toEqual(expected.map((r) => Number(r.id)));
    expect(new Set(mine.seen).size).toBe(mine.seen.length);

    let n = 0;
    const trail = await walk("/rpc/tenant_audit", admin.access_token, { tenant_id: tenantId }, () =>
      call("/rpc/upsert_rules", { token: admin.access_token, body: { tenant_id: tenantId, framework: `more-${n++}`, rules: DEMO_RULES } }));
    const expectedTrail = await sql`select id from audit.events where chain = ${tenantId} and id <= ${trail.snapshot[0]!} order by id desc`;
    expect(trail.seen).toEqual(expectedTrail.map((r) => Number(r.id)));
    expect(expectedTrail.length).toBe(6);
  });

  test("another tenant's trail, or none, is the 404 of the other compliance reads", async () => {
    const admin = await signedInUser();
    const outsider = await signedInUser();
    const tenantId = (await call("/rpc/create_tenant", { token: admin.access_token, body: { name: "Private Co" } })).json.id as string;
    const reference = await call("/rpc/list_scans", { token: outsider.access_token, body: { tenant_id: tenantId } });
    expect(reference.status).toBe(404);
    for (const fn of ["tenant_audit", "verify_audit_trail"]) {
      for (const id of [tenantId, randomUUID()]) {
        const r = await call(`/rpc/${fn}`, { token: outsider.access_token, body: { tenant_id: id } });
        expect([r.status, r.text]).toEqual([404, reference.text]);
      }
    }
    // anonymous callers may not read any trail
    expect((await call("/rpc/tenant_audit", { body: { tenant_id: tenantId } })).status).toBe(401);
    expect((await call("/rpc/my_security_events", { body: {} })).status).toBe(401);
  });

  test("bad cursors, page sizes, actions and tenant ids: PostgREST-shaped 400s", async () => {
    const admin = await signedInUser();
    const tenantId = (await call("/rpc/create_tenant", { token: admin.access_token, body: { name: "Input Co" } })).json.id as string;
    const cases: [string, Record<string, unknown>, Record<string, unknown>][] = [
      ["tenant_audit", { tenant_id: tenantId, page_size: 0 }, { code: "22023", message: "page_size must be between 1 and 100", details: null, hint: null }],
      ["tenant_audit", { tenant_id: tenantId, page_size: 101 }, { code: "22023", message: "page_size must be between 1 and 100", details: null, hint: null }],
      ["tenant_audit", { tenant_id: tenantId, before: 0 }, { code: "22023", message: "before is not a valid cursor", details: null, hint: "Pass the next_before of the previous page." }],
      ["my_security_events", { before: -5 }, { code: "22023", message: "before is not a valid cursor", details: null, hint: "Pass the next_before of the previous page." }],
      ["tenant_audit", { tenant_id: tenantId, action: "sign_in_failed" }, { code: "22023", message: "action is not a tenant audit action", details: null, hint: expect.stringContaining("trail_pruned") }],
      ["tenant_audit", { tenant_id: tenantId, before: "abc" }, { code: "22P02", message: 'invalid input syntax for type bigint: "abc"', details: null, hint: null }],
      ["tenant_audit", { tenant_id: tenantId, page_size: "ten" }, { code: "22P02", message: 'invalid input syntax for type integer: "ten"', details: null, hint: null }],
      ["tenant_audit", { tenant_id: "not-a-tenant" }, { code: "22P02", message: 'invalid input syntax for type uuid: "not-a-tenant"', details: null, hint: null }],
    ];
    for (const [fn, body, error] of cases) {
      const r = await call(`/rpc/${fn}`, { token: admin.access_token, body });
      expect({ fn, body, status: r.status, json: r.json }).toEqual({ fn, body, status: 400, json: error });
    }
    // a filter of a tenant action that has no events yet is an empty page, not an error
    const none = await call("/rpc/tenant_audit", { token: admin.access_token, body: { tenant_id: tenantId, action: "trail_pruned" } });
    expect(none.json).toEqual({ events: [], next_before: null });
  });
});
