// An operator and a user talk through the pages: the user writes from the
// cabinet opened as a Telegram Mini App, the ticket appears live on the
// dashboard, the operator replies, the reply appears live in the cabinet,
// the user answers. Then the dashboard's feed is reloaded while events are
// being written: it must show exactly the log's newest events.
//   BROWSER_ARGS: {admin: {email, password}, init_data}
import { args, base, newPage, PHONE, scenario, screenshots } from "./harness.mjs";

const SEEN = { timeout: 10_000 };

await scenario(async () => {
  // The operator signs in.
  const admin = await newPage("admin");
  await admin.goto(`${base}/`);
  await admin.waitForURL(/\/admin/);
  await admin.locator("body[data-state=signin]").waitFor();
  await screenshots(admin, "admin-sign-in");
  await admin.getByLabel("E-mail").fill(args.admin.email);
  await admin.getByLabel("Password").fill(args.admin.password);
  await admin.getByRole("button", { name: "Sign in" }).click();
  await admin.locator("body[data-state=app]").waitFor();
  await admin.locator("#conn[data-state=live]").waitFor(SEEN);
  await admin.evaluate(() => { location.hash = "#/tickets"; });
  await admin.getByRole("heading", { name: "Tickets" }).waitFor();

  // The user opens the cabinet inside Telegram (the client puts initData
  // and the theme in the hash) and writes.
  const cabinet = await newPage("cabinet", { viewport: PHONE });
  await cabinet.addInitScript(() => {
    window.__posted = [];
    window.TelegramWebviewProxy = { postEvent: (type, data) => window.__posted.push([type, data]) };
  });
  const theme = { bg_color: "#17212b", text_color: "#f5f5f5", hint_color: "#708499", button_color: "#5288c1", button_text_color: "#ffffff" };
  await cabinet.goto(`${base}/cabinet#tgWebAppData=${encodeURIComponent(args.init_data)}&tgWebAppVersion=7.0&tgWebAppPlatform=android&tgWebAppThemeParams=${encodeURIComponent(JSON.stringify(theme))}`);
  await cabinet.locator("#cabinet[data-state=app][data-ws=open]").waitFor(SEEN);
  const themed = await cabinet.evaluate(() => {
    const style = getComputedStyle(document.documentElement);
    return { bg: style.getPropertyValue("--bg").trim(), panel: style.getPropertyValue("--panel").trim() };
  });
  await cabinet.getByLabel("Message", { exact: true }).fill("My payment is stuck");
  await cabinet.getByRole("button", { name: "Send", exact: true }).click();
  await cabinet.locator("#messages li.from-user", { hasText: "My payment is stuck" }).waitFor(SEEN);
  await screenshots(cabinet, "cabinet-support");

  // The ticket appears on the dashboard without a reload; the operator
  // opens it and replies.
  const row = admin.locator("tr[data-id]", { hasText: "My payment is stuck" });
  await row.waitFor(SEEN);
  const ticketId = await row.getAttribute("data-id");
  await screenshots(admin, "admin-tickets");
  await row.getByRole("link").first().click();
  await admin.locator("li.from-user", { hasText: "My payment is stuck" }).waitFor(SEEN);
  await admin.getByLabel("Reply", { exact: true }).fill("We are looking into it");
  await admin.getByRole("button", { name: "Send reply" }).click();
  await admin.locator("li.from-operator", { hasText: "We are looking into it" }).waitFor(SEEN);

  // The reply reaches the cabinet live; the user answers, and that reaches
  // the open ticket live.
  await cabinet.locator("#messages li.from-operator", { hasText: "We are looking into it" }).waitFor(SEEN);
  await cabinet.getByLabel("Message", { exact: true }).fill("Thanks!");
  await cabinet.keyboard.press("Enter");
  await admin.locator("li.from-user", { hasText: "Thanks!" }).waitFor(SEEN);
  await screenshots(admin, "admin-ticket");
  await screenshots(cabinet, "cabinet-support-answered");
  const cabinetMessages = await cabinet.locator("#messages li[data-message-id]").evaluateAll((items) =>
    items.map((li) => li.getAttribute("data-message-id")));

  // The feed, reloaded while the user keeps writing.
  await admin.evaluate(() => { location.hash = "#/feed"; });
  await admin.locator("#feed-list li[data-event-id]").first().waitFor(SEEN);
  const writing = (async () => {
    for (const text of ["one more thing", "and another"]) {
      await cabinet.getByLabel("Message", { exact: true }).fill(text);
      await cabinet.getByRole("button", { name: "Send", exact: true }).click();
      await cabinet.locator("#messages li.from-user", { hasText: text }).waitFor(SEEN);
    }
  })();
  await admin.reload();
  await writing;
  await admin.locator("#feed-state", { hasText: "live" }).waitFor(SEEN);
  // Rows newest first, as the log has them, once the last message is in.
  const feed = async () => admin.locator("#feed-list li[data-event-id]").evaluateAll((items) =>
    items.map((li) => li.getAttribute("data-event-id")));
  const log = async () => admin.evaluate(async () => {
    const { access_token } = JSON.parse(localStorage.getItem("switchboard.admin.session"));
    const answer = await fetch("/api/v1/admin/events?order=desc&limit=100", { headers: { authorization: `Bearer ${access_token}` } });
    return (await answer.json()).events.map((e) => e.id);
  });
  let shown = [];
  let logged = [];
  for (let i = 0; i < 50; i++) {
    [shown, logged] = [await feed(), await log()];
    if (shown.length && JSON.stringify(shown.slice(0, logged.length)) === JSON.stringify(logged)) break;
    await admin.waitForTimeout(200);
  }
  await screenshots(admin, "admin-feed");
  // Telegram's back button leaves a sub-screen.
  await cabinet.getByRole("link", { name: "Account" }).click();
  await cabinet.getByRole("link", { name: "All transactions" }).click();
  await cabinet.waitForURL(/#\/transactions$/);
  const backShown = await cabinet.evaluate(() => window.__posted.some(([type, data]) =>
    type === "web_app_setup_back_button" && JSON.parse(data).is_visible === true));
  await cabinet.evaluate(() => window.Telegram.WebView.receiveEvent("back_button_pressed"));
  await cabinet.waitForURL(/#\/account$/);
  const mini = await cabinet.evaluate(() => window.__posted.map(([type]) => type));
  return { ticket_id: ticketId, cabinet_messages: cabinetMessages, feed: shown, log: logged, mini_app_events: mini, themed_bg: themed, back_button_shown: backShown };
});
