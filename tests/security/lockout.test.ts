// Attack class 10: failures from anyone used to lock the real owner out. Limits are per
// account and client address; an attacker's address is limited, the owner's is not.
import { describe, expect, test } from "bun:test";
import { call, newUser, signUp } from "../api/helpers";
import { canStartInstances, OWN_INSTANCE, proxiedApi } from "./support";

describe("no lockout of a third party", () => {
  test.skipIf(!canStartInstances)(`an attacker's failures limit the attacker, not the owner ${canStartInstances ? "" : OWN_INSTANCE}`, async () => {
    const base = await proxiedApi();
    const owner = newUser();
    await signUp(owner, base);
    const from = (address: string) => ({ "X-Forwarded-For": address });
    const statuses: number[] = [];
    for (let i = 0; i < 15; i++) {
      const answer = await call("/rpc/sign_in", { base, headers: from("198.51.100.66"), body: { email: owner.email, password: `guess ${i}` } });
      statuses.push(answer.status);
    }
    // The attacker is stopped (by the gateway's first filter or the database's throttle) …
    expect(statuses.slice(0, 5)).toEqual([401, 401, 401, 401, 401]);
    expect(statuses.at(-1)).toBe(429);
    // … and the right password from the attacker's address is refused too,
    const attacker = await call("/rpc/sign_in", { base, headers: from("198.51.100.66"), body: owner });
    expect(attacker.status).toBe(429);
    // … while the owner, from their own address, signs in.
    const mine = await call("/rpc/sign_in", { base, headers: from("203.0.113.5"), body: owner });
    expect(mine.status).toBe(200);
    expect(typeof mine.json.access_token).toBe("string");
  });
});
