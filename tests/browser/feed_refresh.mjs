// The dashboard's feed outlives its access token: the page refreshes the
// token and hands the new one to the open socket, so the one connection
// stays live past several expiries and still carries new events.
//   BROWSER_ARGS: {admin: {email, password}, user_id, ttl_seconds}
import { args, base, newPage, scenario } from "./harness.mjs";

await scenario(async () => {
  const page = await newPage("feed-refresh");
  let sockets = 0;
  const closes = [];
  page.on("websocket", (socket) => {
    sockets += 1;
    socket.on("close", () => closes.push(Date.now()));
  });
  await page.goto(`${base}/admin#/feed`);
  await page.getByLabel("E-mail").fill(args.admin.email);
  await page.getByLabel("Password").fill(args.admin.password);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.locator("#feed-state", { hasText: "live" }).waitFor();
  const first = await page.evaluate(() => JSON.parse(localStorage.getItem("switchboard.admin.session")).access_token);
  await page.evaluate(() => {
    window.__states = [];
    SB.onConnection((state) => window.__states.push(state));
  });
  await page.waitForTimeout(args.ttl_seconds * 2500);
  // A payment after the first token expired reaches the same socket.
  const paid = await page.evaluate(async (user) => {
    const { access_token } = JSON.parse(localStorage.getItem("switchboard.admin.session"));
    const answer = await fetch("/api/v1/admin/payments", {
      method: "POST",
      headers: { authorization: `Bearer ${access_token}`, "content-type": "application/json" },
      body: JSON.stringify({ user_id: user, amount: 100, currency: "RUB", provider: "p", external_id: "late", status: "completed" }),
    });
    return answer.status;
  }, args.user_id);
  await page.locator("#feed-list li[data-type='payment.completed']").first().waitFor({ timeout: 10_000 });
  const last = await page.evaluate(() => JSON.parse(localStorage.getItem("switchboard.admin.session")).access_token);
  return {
    sockets,
    closes: closes.length,
    states: await page.evaluate(() => window.__states),
    refreshed: first !== last,
    paid,
  };
});
