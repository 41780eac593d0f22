// What an owner does on the dashboard changes what the API holds: a
// ticket's status and priority, a user blocked and topped up, a webhook
// endpoint created and its secret rotated, an API key created and revoked,
// the feed filtered by type. Each checked through the API by the caller.
//   BROWSER_ARGS: {owner: {email, password}, ticket_id, user_id}
import { args, base, newPage, scenario, screenshots } from "./harness.mjs";

const SEEN = { timeout: 10_000 };

await scenario(async () => {
  const page = await newPage("actions");
  page.on("dialog", (dialog) => dialog.accept());
  await page.goto(`${base}/admin`);
  await page.getByLabel("E-mail").fill(args.owner.email);
  await page.getByLabel("Password").fill(args.owner.password);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.locator("body[data-state=app]").waitFor();
  const go = (hash) => page.evaluate((h) => { location.hash = h; }, hash);
  const found = {};

  // The ticket: pending, then urgent.
  await go(`#/tickets/${args.ticket_id}`);
  await page.locator("#ticket").waitFor(SEEN);
  const select = (label) => page.locator("#view label", { hasText: new RegExp(`^${label}`) }).locator("select");
  await select("Status").selectOption("pending");
  await page.locator("#ticket[data-status=pending]").waitFor(SEEN);
  await select("Priority").selectOption("urgent");
  await page.locator("#ticket[data-priority=urgent]").waitFor(SEEN);

  // The user: topped up with a reason, then blocked.
  await go(`#/users/${args.user_id}`);
  await page.locator("#user").waitFor(SEEN);
  await page.getByLabel("Amount", { exact: true }).fill("1250");
  await page.getByLabel("Currency", { exact: true }).fill("RUB");
  await page.getByLabel("Reason", { exact: true }).fill("goodwill credit");
  await page.getByRole("button", { name: "Top up" }).click();
  await page.locator('li[data-currency="RUB"]').waitFor(SEEN);
  await page.getByLabel("Why block this user?").fill("chargeback fraud");
  await page.getByRole("button", { name: "Block", exact: true }).click();
  await page.locator("#user[data-status=blocked]").waitFor(SEEN);
  await screenshots(page, "actions-user");

  // A webhook endpoint, created from the form; its secret rotated.
  await go("#/webhooks");
  await page.getByRole("button", { name: "New endpoint" }).click();
  await page.getByLabel("URL", { exact: true }).fill("http://localhost:9/crm");
  await page.getByLabel("Event types").fill("ticket.*, payment.completed");
  await page.getByRole("button", { name: "Create endpoint" }).click();
  const secret = page.locator("[data-secret] input");
  await secret.waitFor(SEEN);
  found.created_secret = await secret.inputValue();
  await page.getByRole("button", { name: "Done" }).click();
  const row = page.locator("tr[data-id]", { hasText: "localhost" });
  await row.waitFor(SEEN);
  found.webhook_id = await row.getAttribute("data-id");
  await go(`#/webhooks/${found.webhook_id}`);
  await page.getByLabel("Grace seconds").fill("0");
  await page.getByRole("button", { name: "Rotate secret" }).click();
  await page.locator("[data-secret] input").waitFor(SEEN);
  found.rotated_secret = await page.locator("[data-secret] input").inputValue();
  await screenshots(page, "actions-webhook");

  // An API key, shown once, then revoked.
  await go("#/api-keys");
  await page.getByLabel("Name", { exact: true }).fill("reporting");
  await page.getByRole("checkbox", { name: /events:read/ }).check();
  await page.getByRole("button", { name: "Create API key" }).click();
  await page.locator("[data-secret] input").waitFor(SEEN);
  found.api_key = await page.locator("[data-secret] input").inputValue();
  const key = page.locator("tr[data-id]", { hasText: "reporting" });
  await key.waitFor(SEEN);
  const revoked = page.waitForResponse((r) => r.request().method() === "DELETE" && r.url().includes("/api-keys/"));
  await key.getByRole("button", { name: "Revoke" }).click();
  found.revoke_status = (await revoked).status();
  await screenshots(page, "actions-api-keys");

  // The feed filtered to one family.
  await go("#/feed");
  await page.getByLabel("Filter by type").fill("ticket.*");
  await page.getByRole("button", { name: "Apply filter" }).click();
  await page.waitForTimeout(800);
  found.filtered_types = await page.locator("#feed-list li[data-event-id]").evaluateAll((items) =>
    [...new Set(items.map((li) => li.getAttribute("data-type")))]);
  return found;
});
