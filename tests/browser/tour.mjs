// Every page, as each role sees it, at desktop and phone width, light and
// dark: the screenshots under target/browser/ and what each role may do.
//   BROWSER_ARGS: {owner, viewer: {email, password}, ticket_id, user_id,
//                  webhook_id, widget: {fields of a signed Login Widget payload}, bot_id}
import { args, base, newPage, PHONE, scenario, screenshots } from "./harness.mjs";

const SEEN = { timeout: 10_000 };

async function signIn(page, who) {
  await page.goto(`${base}/admin`);
  await page.locator("body[data-state=signin]").waitFor();
  await page.getByLabel("E-mail").fill(who.email);
  await page.getByLabel("Password").fill(who.password);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.locator("body[data-state=app]").waitFor();
}

async function open(page, hash) {
  await page.evaluate((h) => { location.hash = h; }, hash);
  await page.locator("#view h1").first().waitFor(SEEN);
  // Let the view's own requests settle (the socket stays open).
  await page.waitForTimeout(400);
}

const navOf = (page) => page.locator("#nav-list a").evaluateAll((links) => links.map((a) => a.textContent.trim()));

await scenario(async () => {
  const found = {};

  // Keyboard: the sign-in form in focus order, Enter submits.
  const keys = await newPage("keyboard");
  await keys.goto(`${base}/admin`);
  await keys.locator("body[data-state=signin]").waitFor();
  await keys.getByLabel("E-mail").focus();
  const order = [];
  for (let i = 0; i < 2; i++) {
    await keys.keyboard.press("Tab");
    order.push(await keys.evaluate(() => document.activeElement.getAttribute("type") || document.activeElement.tagName));
  }
  found.sign_in_tab_order = order;
  await keys.getByLabel("E-mail").fill(args.owner.email);
  await keys.getByLabel("Password").fill(args.owner.password);
  await keys.getByLabel("Password").press("Enter");
  await keys.locator("body[data-state=app]").waitFor();
  found.enter_signs_in = true;
  await keys.getByRole("button", { name: "Sign out" }).click();
  await keys.locator("body[data-state=signin]").waitFor();
  found.signed_out = await keys.evaluate(() => localStorage.getItem("switchboard.admin.session") === null);

  // The owner sees every section.
  for (const scheme of ["light", "dark"]) {
    const owner = await newPage(`owner-${scheme}`, { colorScheme: scheme });
    await signIn(owner, args.owner);
    found.owner_nav = await navOf(owner);
    await owner.locator("#view h1").first().waitFor(SEEN);
    found.landing = (await owner.locator("#view h1").first().innerText()).trim();
    const views = [
      ["stats", "#/stats/24h"], ["feed", "#/feed"], ["tickets", "#/tickets"],
      ["ticket", `#/tickets/${args.ticket_id}`], ["users", "#/users"], ["user", `#/users/${args.user_id}`],
      ["webhooks", "#/webhooks"], ["webhook", `#/webhooks/${args.webhook_id}`],
      ["broadcasts", "#/broadcasts/new"], ["api-keys", "#/api-keys"],
    ];
    for (const [name, hash] of scheme === "light" ? views : views.filter(([n]) => ["stats", "ticket"].includes(n))) {
      await open(owner, hash);
      if (name === "stats") {
        await owner.locator('figure[data-chart="events"] svg').waitFor(SEEN);
        found.event_bars = await owner.locator('figure[data-chart="events"] svg rect').count();
      }
      if (name === "ticket") {
        const photo = owner.locator("img[data-file-id]").first();
        await photo.waitFor({ state: "attached", ...SEEN });
        found.photo = { file_id: await photo.getAttribute("data-file-id"), src: (await photo.getAttribute("src"))?.slice(0, 5) };
        found.owner_can_reply = await owner.getByRole("button", { name: "Send reply" }).count();
      }
      await screenshots(owner, `owner-${name}-${scheme}`);
    }
  }

  // A viewer reads but changes nothing: no reply box, no broadcasts,
  // webhooks or keys.
  const viewer = await newPage("viewer");
  await signIn(viewer, args.viewer);
  found.viewer_nav = await navOf(viewer);
  await open(viewer, `#/tickets/${args.ticket_id}`);
  await viewer.locator("li[data-message-id]").first().waitFor(SEEN);
  found.viewer_reply_boxes = await viewer.getByLabel("Reply", { exact: true }).count();
  found.viewer_reply_buttons = await viewer.getByRole("button", { name: "Send reply" }).count();
  await open(viewer, `#/users/${args.user_id}`);
  found.viewer_block_buttons = await viewer.getByRole("button", { name: "Block" }).count();
  await screenshots(viewer, "viewer-ticket");

  // The cabinet in a plain browser: the sign-in screen, then back from
  // the Login Widget's redirect, signed in.
  const cabinet = await newPage("cabinet-browser", { viewport: PHONE });
  await cabinet.goto(`${base}/cabinet`);
  await cabinet.locator("#cabinet[data-state=signin]").waitFor(SEEN);
  found.widget_link = await cabinet.getByRole("link", { name: "Log in with Telegram" }).getAttribute("href");
  found.bot_link = await cabinet.getByRole("link", { name: "@switchboard_test_bot" }).getAttribute("href");
  await screenshots(cabinet, "cabinet-sign-in");
  const result = Buffer.from(JSON.stringify(args.widget)).toString("base64url");
  // Back from oauth.telegram.org: a new page load with the result.
  await cabinet.goto("about:blank");
  await cabinet.goto(`${base}/cabinet#tgAuthResult=${result}`);
  await cabinet.locator("#cabinet[data-state=app]").waitFor(SEEN);
  found.hash_after_sign_in = await cabinet.evaluate(() => location.hash);
  await cabinet.getByRole("link", { name: "Account" }).click();
  await cabinet.locator("#subscription").filter({ hasText: /\S/ }).waitFor(SEEN);
  found.subscription = (await cabinet.locator("#subscription").innerText()).trim();
  await screenshots(cabinet, "cabinet-account");
  return found;
});
