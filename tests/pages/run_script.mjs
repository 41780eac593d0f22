// Runs the inline script of a page the service serves the way a browser
// would (a real fetch against the service, relative URLs resolved against
// the page's), with the few DOM calls it makes faked:
//
//   node run_script.mjs <page URL> <element id>:<event> [input value]
//
// Prints one JSON line: what the script fetched and what it showed.
const [url, action, value] = process.argv.slice(2);
const page = await fetch(url);
const html = await page.text();
const found = html.match(/<script[^>]*>([\s\S]*?)<\/script>/);
if (!found) {
  console.log(JSON.stringify({ error: "no script on the page" }));
  process.exit(1);
}
const listeners = {};
const elements = {};
const element = (id) =>
  (elements[id] ??= {
    id,
    value: value ?? "",
    textContent: "",
    addEventListener(type, listener) {
      listeners[`${id}:${type}`] = listener;
    },
  });
let fetched = null;
const base = new URL(url);
const pageFetch = async (target, init) => {
  fetched = { url: String(target), method: init?.method ?? "GET", body: init?.body ?? null };
  return fetch(new URL(target, base), init);
};
new Function("document", "fetch", found[1])({ getElementById: element }, pageFetch);
const listener = listeners[action];
if (!listener) {
  console.log(JSON.stringify({ error: `nothing listens for ${action}` }));
  process.exit(1);
}
await listener({ preventDefault() {} });
const shown = Object.values(elements)
  .map((e) => e.textContent)
  .filter(Boolean)
  .join(" ");
console.log(JSON.stringify({ fetched, shown }));
