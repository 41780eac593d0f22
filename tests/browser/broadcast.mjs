// A broadcast composed on the dashboard: the preview shows the message,
// the audience is counted, and once sent its progress bar reaches 100 %
// live (from broadcast.progress / broadcast.completed on the feed).
//   BROWSER_ARGS: {admin: {email, password}, audience}
import { args, base, newPage, scenario, screenshots } from "./harness.mjs";

const SEEN = { timeout: 15_000 };

await scenario(async () => {
  const admin = await newPage("broadcast");
  admin.on("dialog", (dialog) => dialog.accept());
  await admin.goto(`${base}/admin#/broadcasts`);
  await admin.getByLabel("E-mail").fill(args.admin.email);
  await admin.getByLabel("Password").fill(args.admin.password);
  await admin.getByLabel("Password").press("Enter");
  await admin.locator("body[data-state=app]").waitFor();
  await admin.locator("#conn[data-state=live]").waitFor(SEEN);
  await admin.getByRole("button", { name: "New broadcast" }).click();
  await admin.getByLabel("Text", { exact: true }).fill("Spring sale\nEverything -20 %");
  await admin.getByLabel("Buttons", { exact: true }).fill("Open the shop | https://shop.example/sale");
  const preview = admin.locator("[data-preview]");
  await preview.locator("[data-preview-button]", { hasText: "Open the shop" }).waitFor();
  const previewText = await preview.locator("[data-preview-text]").innerText();
  await admin.getByRole("button", { name: "Count audience" }).click();
  const total = admin.locator("[data-audience-total]");
  await total.filter({ hasText: /\d/ }).waitFor(SEEN);
  const counted = (await total.innerText()).trim();
  await screenshots(admin, "admin-broadcast-compose");
  await admin.getByRole("button", { name: "Send broadcast" }).click();
  await admin.waitForURL(/#\/broadcasts\/[0-9a-f-]+$/, SEEN);
  const id = admin.url().split("/").pop();
  await admin.locator(`[data-percent-for="${id}"]`, { hasText: "100 %" }).first().waitFor(SEEN);
  const bar = admin.locator(`progress[data-broadcast-id="${id}"]`).first();
  const [value, max] = [await bar.getAttribute("value"), await bar.getAttribute("max")];
  await admin.locator(`[data-broadcast-status="${id}"]`, { hasText: /completed/i }).first().waitFor(SEEN);
  const sent = (await admin.locator('[data-count="sent"]').first().innerText()).trim();
  await screenshots(admin, "admin-broadcast-done");
  return { id, preview_text: previewText, counted, value, max, sent };
});
