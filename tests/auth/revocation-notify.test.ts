// The database publishes every revocation: NOTIFY autoaudit_session_revoked {"sid", "sub"},
// whatever revoked the session (plain SQL, api.revoke_token, a deleted user).
import { afterAll, beforeAll, expect, test } from "bun:test";
import { adminSql, call, signIn, signUp, uniqueEmail, type SignedIn } from "./support";

const admin = adminSql();
const listener = adminSql();
const received: { sid: string; sub: string }[] = [];
beforeAll(async () => {
  // A real LISTEN on a connection of its own, as a gateway would hold.
  await listener.listen("autoaudit_session_revoked", (payload) => received.push(JSON.parse(payload)));
});
afterAll(async () => {
  await listener.end();
  await admin.end();
});

async function notified(sid: string, timeoutMs = 2000) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const found = received.filter((n) => n.sid === sid);
    if (found.length) return found;
    await Bun.sleep(10);
  }
  return [];
}

async function newSession() {
  const email = uniqueEmail("notify");
  const user = await signUp(email);
  const session = (await signIn(email)).body as SignedIn;
  return { user, session };
}

test("an UPDATE in plain SQL that revokes a session notifies its sid and sub", async () => {
  const { user, session } = await newSession();
  await admin`update auth.sessions set revoked_at = now(), revoked_reason = 'logout' where id = ${session.session_id}`;
  expect(await notified(session.session_id)).toEqual([{ sid: session.session_id, sub: user.id }]);
  // Revoking it again changes nothing and says nothing.
  await admin`update auth.sessions set revoked_at = now(), revoked_reason = 'logout_all' where id = ${session.session_id}`;
  await Bun.sleep(100);
  expect(received.filter((n) => n.sid === session.session_id)).toHaveLength(1);
});

test("api.revoke_token notifies", async () => {
  const { user, session } = await newSession();
  const result = await call("revoke_token", { refresh_token: session.refresh_token });
  expect({ status: result.status, body: result.body }).toEqual({ status: 200, body: { session_id: session.session_id } });
  expect(await notified(session.session_id)).toEqual([{ sid: session.session_id, sub: user.id }]);
});

test("a rolled-back revocation and other updates of a session notify nothing; the committed revocation does", async () => {
  const { session } = await newSession();
  await admin
    .begin(async (tx) => {
      await tx`update auth.sessions set revoked_at = now(), revoked_reason = 'logout' where id = ${session.session_id}`;
      throw new Error("rollback");
    })
    .catch(() => {});
  await admin`update auth.sessions set created_at = created_at where id = ${session.session_id}`;
  expect(await notified(session.session_id, 300)).toEqual([]);
  // The revocation that commits is the one announced.
  await admin`update auth.sessions set revoked_at = now(), revoked_reason = 'logout' where id = ${session.session_id}`;
  expect(await notified(session.session_id)).toHaveLength(1);
});

test("deleting a user notifies each of its active sessions", async () => {
  const { user, session } = await newSession();
  const second = (await signIn(user.email)).body as SignedIn;
  await admin`delete from auth.users where id = ${user.id}`;
  expect(await notified(session.session_id)).toEqual([{ sid: session.session_id, sub: user.id }]);
  expect(await notified(second.session_id)).toEqual([{ sid: second.session_id, sub: user.id }]);
});
