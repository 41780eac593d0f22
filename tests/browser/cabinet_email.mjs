// The cabinet in a plain browser, signed in by e-mail and password; a
// sub-screen's Back button returns to where it was opened from.
//   BROWSER_ARGS: {email, password, name}
import { args, base, newPage, PHONE, scenario, screenshots } from "./harness.mjs";

const SEEN = { timeout: 10_000 };

await scenario(async () => {
  const page = await newPage(args.name, { viewport: PHONE });
  await page.goto(`${base}/cabinet`);
  await page.locator("#cabinet[data-state=signin]").waitFor(SEEN);
  await page.getByLabel("E-mail").fill(args.email);
  await page.getByLabel("Password").fill(args.password);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.locator("#cabinet[data-state=app][data-ws=open]").waitFor(SEEN);
  await page.getByRole("link", { name: "Account" }).click();
  await page.getByRole("link", { name: "All transactions" }).click();
  await page.waitForURL(/#\/transactions$/);
  await page.getByRole("button", { name: "Back" }).click();
  await page.waitForURL(/#\/account$/);
  await screenshots(page, `${args.name}-account`);
  return { signed_in: true, back_to: new URL(page.url()).hash };
});
