// A dropped connection loses no row and repeats none: the feed's socket is
// cut from the server's side while payments are being recorded; the page
// reconnects with its cursor and shows each event once, as the log has them.
//   BROWSER_ARGS: {admin: {email, password}, user_id}
import { args, base, newPage, scenario, screenshots } from "./harness.mjs";

const SEEN = { timeout: 10_000 };

await scenario(async () => {
  const page = await newPage("feed-drop");
  const routes = [];
  // Every feed socket goes through here, to the real server.
  await page.routeWebSocket(/\/ws\?/, (ws) => {
    ws.connectToServer();
    routes.push(ws);
  });
  await page.goto(`${base}/admin#/feed`);
  await page.getByLabel("E-mail").fill(args.admin.email);
  await page.getByLabel("Password").fill(args.admin.password);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.locator("#feed-state", { hasText: "live" }).waitFor(SEEN);
  const pay = (n) => page.evaluate(async ([user, n]) => {
    const { access_token } = JSON.parse(localStorage.getItem("switchboard.admin.session"));
    const answer = await fetch("/api/v1/admin/payments", {
      method: "POST",
      headers: { authorization: `Bearer ${access_token}`, "content-type": "application/json" },
      body: JSON.stringify({ user_id: user, amount: 100 + n, currency: "RUB", provider: "p", external_id: `drop-${n}`, status: "completed" }),
    });
    return answer.status;
  }, [args.user_id, n]);
  await pay(1);
  await page.locator("#feed-list li[data-type='payment.completed']").first().waitFor(SEEN);
  // The server side goes away; three payments are recorded meanwhile.
  await routes.at(-1).close({ code: 1012, reason: "restarting" });
  await page.locator("#conn:not([data-state=live])").waitFor(SEEN);
  const statuses = [await pay(2), await pay(3), await pay(4)];
  await page.locator("#feed-state", { hasText: "live" }).waitFor(SEEN);
  await page.waitForFunction(() => document.querySelectorAll("#feed-list li[data-type='payment.completed']").length >= 4, null, SEEN);
  await page.waitForTimeout(500);
  await screenshots(page, "admin-feed-after-drop");
  const shown = await page.locator("#feed-list li[data-event-id]").evaluateAll((items) => items.map((li) => li.getAttribute("data-event-id")));
  return { sockets: routes.length, statuses, shown };
});
