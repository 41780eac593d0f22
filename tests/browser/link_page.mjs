// An e-mailed link's page opened in the browser: press its button or fill
// its form, and report what it says.
//   BROWSER_ARGS: {url, action: "confirm" | "forgot" | "reset", value, name}
import { args, newPage, scenario, screenshots } from "./harness.mjs";

await scenario(async () => {
  const page = await newPage(args.name);
  await page.goto(args.url);
  await screenshots(page, `${args.name}-before`);
  const answered = page.waitForResponse((r) => r.request().method() === "POST");
  if (args.action === "confirm") {
    await page.getByRole("button", { name: "Confirm" }).click();
  } else if (args.action === "forgot") {
    await page.getByLabel("Your e-mail address").fill(args.value);
    await page.keyboard.press("Enter");
  } else {
    await page.getByLabel(/New password/).fill(args.value);
    await page.getByRole("button", { name: "Set the password" }).click();
  }
  const response = await answered;
  const status = page.locator("[role=status]");
  await status.filter({ hasText: /\S/ }).waitFor();
  await screenshots(page, `${args.name}-after`);
  return { posted: new URL(response.url()).pathname, answer: response.status(), shown: await status.textContent() };
});
