// RPC through the embedded engine on the product database: calling conventions, result
// shapes, PostgREST's errors and the response GUCs, asserted on real responses.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import type { Engine } from "../../api/src/engine/index";
import { adminSql, get, post, productEngine, readJson, signToken, uniqueEmail } from "./rpc-support";

let engine: Engine;
const admin = adminSql();

beforeAll(async () => {
  engine = await productEngine({ dbTxEnd: "commit-allow-override" });
  // A schema of our own for shapes the product's api schema does not have.
  await admin.unsafe(`
    drop schema if exists engine_rpc cascade;
    create schema engine_rpc;
    grant usage on schema engine_rpc to anon, authenticated;
    create function engine_rpc.numbers(upto int) returns setof int language sql stable as 'select generate_series(1, upto)';
    create function engine_rpc.pairs(upto int) returns table(n int, label text) language sql stable
      as $$ select g, 'n' || g from generate_series(1, upto) g $$;
    create function engine_rpc.nothing() returns void language sql as 'select';
    create function engine_rpc.echo(json) returns json language sql immutable as 'select $1';
    create function engine_rpc.teapot() returns text language plpgsql as $$
    begin
      perform set_config('response.status', '418', true);
      perform set_config('response.headers', '[{"X-Brew":"tea"},{"Cache-Control":"no-store"}]', true);
      return 'short and stout';
    end $$;
    create function engine_rpc.created(name text) returns json language plpgsql as $$
    begin
      perform set_config('response.status', '201', true);
      perform set_config('response.headers', json_build_array(json_build_object('Location', '/items/' || name))::text, true);
      return json_build_object('name', name);
    end $$;
    create function engine_rpc.maybe_doc(present boolean) returns jsonb language sql stable
      as $$ select case when present then '{"b": 1, "a": [1,2]}'::jsonb end $$;
    create function engine_rpc.bad_headers() returns int language plpgsql as $$
    begin perform set_config('response.headers', '{"not":"an array"}', true); return 1; end $$;
    create function engine_rpc.whoami() returns json language sql stable as $$
      select json_build_object('user', current_user, 'claims', current_setting('request.jwt.claims', true)::json,
        'method', current_setting('request.method', true), 'path', current_setting('request.path', true),
        'headers', current_setting('request.headers', true)::json, 'cookies', current_setting('request.cookies', true)::json)
    $$;
    create table engine_rpc.stamps (batch text not null, n int not null);
    grant select, insert on engine_rpc.stamps to anon, authenticated;
    create function engine_rpc.stamp(batch text, count int) returns setof engine_rpc.stamps language sql volatile
      as $$ insert into engine_rpc.stamps select batch, g from generate_series(1, count) g returning * $$;
    grant execute on all functions in schema engine_rpc to anon, authenticated;
  `);
});

afterAll(async () => {
  await engine.close();
  await admin.unsafe("drop schema if exists engine_rpc cascade");
  await admin.end();
});

async function signUp(email: string) {
  return readJson(await engine.fetch(post("/rpc/sign_up", { email, password: "correct horse", first_name: "Ada", last_name: "Lovelace" })));
}

describe("calling the product's auth functions", () => {
  test("sign_up returns the user as PostgREST renders a json scalar", async () => {
    const email = uniqueEmail("rpc");
    const res = await engine.fetch(post("/rpc/sign_up", { email, password: "correct horse", first_name: "Ada", last_name: "Lovelace" }));
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe("application/json; charset=utf-8");
    expect(res.headers.get("content-range")).toBe("0-0/*");
    const { json } = await readJson(res);
    expect(json).toMatchObject({ email, first_name: "Ada", last_name: "Lovelace", last_login_at: null });
  });

  test("sign_in then me with the access token the gateway would mint", async () => {
    const email = uniqueEmail("rpc-me");
    const created = (await signUp(email)).json as { id: string };
    const session = await readJson(await engine.fetch(post("/rpc/sign_in", { email, password: "correct horse" })));
    expect(session.status).toBe(200);
    const { session_id, refresh_token } = session.json as { session_id: string; refresh_token: string };
    expect(refresh_token.length).toBeGreaterThan(40);

    const token = await signToken({ role: "authenticated", sub: created.id, sid: session_id });
    const me = await readJson(await engine.fetch(get("/rpc/me", { Authorization: `Bearer ${token}` })));
    expect(me.status).toBe(200);
    expect(me.json).toMatchObject({ id: created.id, email });

    const active = await readJson(await engine.fetch(post("/rpc/session_active", {}, { Authorization: `Bearer ${token}` })));
    expect(active.json).toBe(true);
  });

  test("a function the anonymous role may not execute is 401 with WWW-Authenticate", async () => {
    const res = await engine.fetch(get("/rpc/me"));
    const { status, json } = await readJson(res);
    expect(status).toBe(401);
    expect(res.headers.get("www-authenticate")).toBe("Bearer");
    expect(json).toEqual({ code: "42501", details: null, hint: null, message: "permission denied for function me" });
  });

  test("PTxxx and 22023 raised by the functions keep their status, message and hint", async () => {
    const email = uniqueEmail("dup");
    await signUp(email);
    const dup = await signUp(email);
    expect(dup.status).toBe(409);
    expect(dup.json).toEqual({ code: "PT409", details: null, hint: "Sign in instead.", message: "an account with this email already exists" });
    const wrong = await readJson(await engine.fetch(post("/rpc/sign_in", { email, password: "wrong password" })));
    expect(wrong.status).toBe(401);
    expect(wrong.json).toMatchObject({ code: "PT401", message: "invalid email or password" });
    const invalid = await readJson(await engine.fetch(post("/rpc/sign_up", { email: "not-an-email", password: "correct horse", first_name: "A", last_name: "B" })));
    expect(invalid.status).toBe(400);
    expect(invalid.json).toMatchObject({ code: "22023", message: "email is not a valid address" });
  });

  test("response.status set by issue_token on reuse commits the revocation and answers 401", async () => {
    const email = uniqueEmail("reuse");
    await signUp(email);
    const session = (await readJson(await engine.fetch(post("/rpc/sign_in", { email, password: "correct horse" })))).json as { refresh_token: string };
    const rotated = await readJson(await engine.fetch(post("/rpc/issue_token", { refresh_token: session.refresh_token })));
    expect(rotated.status).toBe(200);
    // past the refresh retry grace: the clock moved in SQL
    await admin`update auth.refresh_tokens set retired_at = retired_at - interval '1 hour' where token_hash = auth.token_digest(${session.refresh_token})`;
    const reuse = await readJson(await engine.fetch(post("/rpc/issue_token", { refresh_token: session.refresh_token })));
    expect(reuse.status).toBe(401);
    expect(reuse.json).toMatchObject({ code: "PT401", message: "refresh token reuse detected; the session was revoked" });
    const next = (rotated.json as { refresh_token: string }).refresh_token;
    const validated = await readJson(await engine.fetch(get(`/rpc/validate_token?refresh_token=${encodeURIComponent(next)}`)));
    expect(validated.json).toMatchObject({ active: false });
  });
});

describe("GET and POST rules", () => {
  test("GET passes query arguments to a STABLE function", async () => {
    const res = await readJson(await engine.fetch(get("/rpc/validate_token?refresh_token=nope")));
    expect(res.status).toBe(200);
    expect(res.json).toEqual({ active: false, user_id: null, session_id: null, expires_at: null });
  });

  test("GET on a VOLATILE function that writes is PostgREST's 405 (read-only transaction)", async () => {
    const email = uniqueEmail("get-volatile");
    await signUp(email);
    // sign_in refuses a read-only call before any password check (it could not record a
    // failure), so the right and a wrong password get the same 405: GET is no password oracle.
    for (const password of ["correct%20horse", "wrong"]) {
      const res = await readJson(await engine.fetch(get(`/rpc/sign_in?email=${encodeURIComponent(email)}&password=${password}`)));
      expect(res.status).toBe(405);
      expect(res.json).toMatchObject({ code: "25006", message: "cannot execute sign_in in a read-only transaction" });
    }
  });

  test("other methods are PGRST101", async () => {
    for (const method of ["DELETE", "PATCH", "PUT"]) {
      const res = await readJson(await engine.fetch(new Request("http://engine/rpc/sign_in", { method })));
      expect(res.status).toBe(405);
      expect(res.json).toEqual({ code: "PGRST101", details: null, hint: null, message: `Cannot use the ${method} method on RPC` });
    }
  });

  test("an unknown function is PGRST202 with PostgREST's hint", async () => {
    const res = await engine.fetch(post("/rpc/sign_inn", { email: "a", password: "b" }));
    expect(res.headers.get("proxy-status")).toBe("PostgREST; error=PGRST202");
    expect((await readJson(res)).json).toEqual({
      code: "PGRST202",
      details: "Searched for the function api.sign_inn with parameters email, password or with a single unnamed json/jsonb parameter, but no matches were found in the schema cache.",
      hint: "Perhaps you meant to call the function api.sign_in",
      message: "Could not find the function api.sign_inn(email, password) in the schema cache",
    });
  });

  test("unknown arguments name the closest parameter list", async () => {
    const res = await readJson(await engine.fetch(post("/rpc/sign_in", { email: "a", pasword: "b" })));
    expect(res.status).toBe(404);
    expect(res.json).toMatchObject({
      code: "PGRST202",
      message: "Could not find the function api.sign_in(email, pasword) in the schema cache",
      hint: "Perhaps you meant to call the function api.sign_in(email, password)",
    });
  });

  test("an array body calls with its first object", async () => {
    const res = await readJson(await engine.fetch(post("/rpc/validate_token", [{ refresh_token: "x" }, { refresh_token: "y" }])));
    expect(res.status).toBe(200);
    expect(res.json).toMatchObject({ active: false });
  });
});

describe("result shapes", () => {
  const rpc = { "Accept-Profile": "engine_rpc" };
  let shaped: Engine;
  beforeAll(async () => {
    shaped = await productEngine({ dbSchemas: ["api", "engine_rpc"] });
  });
  afterAll(() => shaped.close());

  test("SETOF scalar and TABLE results are arrays rendered by json_agg, with select/filter/order/limit", async () => {
    const numbers = await readJson(await shaped.fetch(get("/rpc/numbers?upto=3", rpc)));
    expect(numbers.text).toBe("[1, 2, 3]");
    const res = await shaped.fetch(get("/rpc/pairs?upto=5&n=gt.1&select=label&order=n.desc&limit=2", rpc));
    expect(res.headers.get("content-range")).toBe("0-1/*");
    expect((await readJson(res)).text).toBe('[{"label":"n5"}, \n {"label":"n4"}]');
  });

  test("count=exact gives the total in Content-Range and 206 for a partial page", async () => {
    const res = await shaped.fetch(get("/rpc/pairs?upto=5&limit=2&offset=1", { ...rpc, Prefer: "count=exact" }));
    expect(res.status).toBe(206);
    expect(res.headers.get("content-range")).toBe("1-2/5");
  });

  test("object+json picks the single row, or PGRST116 when there is not exactly one", async () => {
    const one = await readJson(await shaped.fetch(get("/rpc/pairs?upto=1", { ...rpc, Accept: "application/vnd.pgrst.object+json" })));
    expect(one.json).toEqual({ n: 1, label: "n1" });
    const many = await readJson(await shaped.fetch(get("/rpc/pairs?upto=2", { ...rpc, Accept: "application/vnd.pgrst.object+json" })));
    expect(many.status).toBe(406);
    expect(many.json).toEqual({ code: "PGRST116", details: "The result contains 2 rows", hint: null, message: "Cannot coerce the result to a single JSON object" });
  });

  test("void is 204 without a body; a single unnamed json parameter takes the whole body", async () => {
    const res = await shaped.fetch(post("/rpc/nothing", {}, { "Content-Profile": "engine_rpc" }));
    expect(res.status).toBe(204);
    expect(await res.text()).toBe("");
    expect(res.headers.get("content-type")).toBeNull();
    const echo = await readJson(await shaped.fetch(post("/rpc/echo", '{"any": [1, "shape"]}', { "Content-Profile": "engine_rpc" })));
    expect(echo.text).toBe('{"any": [1, "shape"]}');
  });

  test("response.status and response.headers set by the function shape the response", async () => {
    const res = await shaped.fetch(post("/rpc/teapot", {}, { "Content-Profile": "engine_rpc" }));
    expect(res.status).toBe(418);
    expect(res.headers.get("x-brew")).toBe("tea");
    expect(res.headers.get("cache-control")).toBe("no-store");
    expect(await res.text()).toBe('"short and stout"');
    const bad = await readJson(await shaped.fetch(post("/rpc/bad_headers", {}, { "Content-Profile": "engine_rpc" })));
    expect(bad.status).toBe(500);
    expect(bad.json).toMatchObject({ code: "PGRST111" });
  });

  test("json and jsonb results come back as PostgreSQL renders them, after what the function set", async () => {
    const res = await shaped.fetch(post("/rpc/created", { name: "x 1" }, { "Content-Profile": "engine_rpc" }));
    expect(res.status).toBe(201);
    expect(res.headers.get("location")).toBe("/items/x 1");
    expect(res.headers.get("content-type")).toBe("application/json; charset=utf-8");
    expect(await res.text()).toBe('{"name" : "x 1"}');
    const doc = await shaped.fetch(get("/rpc/maybe_doc?present=true", { "Accept-Profile": "engine_rpc" }));
    expect(doc.status).toBe(200);
    expect(await doc.text()).toBe('{"a": [1, 2], "b": 1}');
    const none = await shaped.fetch(get("/rpc/maybe_doc?present=false", { "Accept-Profile": "engine_rpc" }));
    expect(none.status).toBe(200);
    expect(none.headers.get("content-length")).toBe("4");
    expect(await none.text()).toBe("null");
  });

  test("the request GUCs are set as PostgREST sets them", async () => {
    const token = await signToken({ role: "authenticated", sub: "s-1", extra: [1, 2] });
    const res = await readJson(
      await shaped.fetch(post("/rpc/whoami?x=1", {}, {
        "Content-Profile": "engine_rpc", Authorization: `Bearer ${token}`, Cookie: "a=1; b=two", "X-Custom": "yes",
      })),
    );
    const body = res.json as Record<string, any>;
    expect(body.user).toBe("authenticated");
    expect(body.claims).toEqual({ role: "authenticated", sub: "s-1", extra: [1, 2] });
    expect(body.method).toBe("POST");
    expect(body.path).toBe("/rpc/whoami");
    expect(body.cookies).toEqual({ a: "1", b: "two" });
    expect(body.headers["x-custom"]).toBe("yes");
    expect(body.headers.cookie).toBeUndefined();
    const anon = (await readJson(await shaped.fetch(get("/rpc/whoami", rpc)))).json as Record<string, any>;
    expect(anon.user).toBe("anon");
    expect(anon.claims).toEqual({ role: "anon" });
  });

  test("a schema that is not exposed is PGRST106", async () => {
    const res = await readJson(await shaped.fetch(get("/rpc/numbers?upto=1", { "Accept-Profile": "auth" })));
    expect(res.status).toBe(406);
    expect(res.json).toEqual({ code: "PGRST106", details: null, hint: "Only the following schemas are exposed: api, engine_rpc", message: "Invalid schema: auth" });
  });
});

describe("transaction end", () => {
  test("Prefer: tx=rollback undoes the call where the configuration allows it", async () => {
    const email = uniqueEmail("rollback");
    const res = await engine.fetch(post("/rpc/sign_up", { email, password: "correct horse", first_name: "A", last_name: "B" }, { Prefer: "tx=rollback" }));
    expect(res.status).toBe(200);
    expect(res.headers.get("preference-applied")).toBe("tx=rollback");
    const [row] = await admin`select count(*)::int as n from auth.users where email = ${email}`;
    expect(row!.n).toBe(0);
  });

  describe("a refused answer rolls the call back", () => {
    let stamping: Engine;
    beforeAll(async () => {
      stamping = await productEngine({ dbSchemas: ["engine_rpc"] });
    });
    afterAll(() => stamping.close());
    const stamped = async (batch: string) =>
      (await admin`select count(*)::int as n from engine_rpc.stamps where batch = ${batch}`)[0]!.n as number;
    const single = { Accept: "application/vnd.pgrst.object+json" };

    test("object+json with two rows: 406 PGRST116 and nothing written", async () => {
      const res = await readJson(await stamping.fetch(post("/rpc/stamp", { batch: "two-single", count: 2 }, single)));
      expect(res.status).toBe(406);
      expect(res.json).toEqual({ code: "PGRST116", details: "The result contains 2 rows", hint: null, message: "Cannot coerce the result to a single JSON object" });
      expect(await stamped("two-single")).toBe(0);
    });

    test("object+json with one row: answered and committed", async () => {
      const res = await readJson(await stamping.fetch(post("/rpc/stamp", { batch: "one-single", count: 1 }, single)));
      expect(res.status).toBe(200);
      expect(res.json).toEqual({ batch: "one-single", n: 1 });
      expect(await stamped("one-single")).toBe(1);
    });

    test("max-affected exceeded under handling=strict: 400 PGRST124 and nothing written", async () => {
      const prefer = { Prefer: "handling=strict, max-affected=2" };
      const res = await readJson(await stamping.fetch(post("/rpc/stamp", { batch: "three-max", count: 3 }, prefer)));
      expect(res.status).toBe(400);
      expect(res.json).toEqual({ code: "PGRST124", details: "The query affects 3 rows", hint: null, message: "Query result exceeds max-affected preference constraint" });
      expect(await stamped("three-max")).toBe(0);
      const within = await stamping.fetch(post("/rpc/stamp", { batch: "two-max", count: 2 }, prefer));
      expect(within.status).toBe(200);
      expect(await stamped("two-max")).toBe(2);
    });
  });
});
