"""The admin page: one self-contained HTML document (plain HTML + fetch, no build step, nothing to ship beside
the Python package). It calls the same public endpoints as any client; text goes in through `textContent`."""

ADMIN_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>loyalty-stream admin</title>
<style>
  body { font: 14px/1.4 system-ui, sans-serif; margin: 2rem; max-width: 60rem; color: #222; }
  fieldset { border: 1px solid #ccc; margin-bottom: 1rem; }
  label { margin-right: 1rem; }
  input, select { margin-left: .25rem; }
  table { border-collapse: collapse; margin: .5rem 0 1.5rem; }
  td, th { border-bottom: 1px solid #eee; padding: .2rem .6rem; text-align: left; vertical-align: top; }
  .num { text-align: right; font-variant-numeric: tabular-nums; }
  #status { min-height: 1.4em; color: #555; }
  .error { color: #b00020; }
</style>
</head>
<body>
<h1>Customer lookup</h1>
<form id="lookup">
  <fieldset>
    <label>Program <input name="program" value="default" required></label>
    <label>Customer <input name="customer" required autofocus></label>
    <label>Admin token <input name="token" type="password" autocomplete="off"></label>
    <button>Look up</button>
  </fieldset>
</form>
<p id="status"></p>
<section id="result" hidden>
  <h2>Balance</h2>
  <table id="balance"></table>
  <h2>Upcoming expirations</h2>
  <table id="expirations"></table>
  <h2>History</h2>
  <table id="history"></table>
  <h2>Adjust</h2>
  <form id="adjust">
    <fieldset>
      <label>Direction <select name="direction"><option>add</option><option>deduct</option></select></label>
      <label>Points <input name="points" required size="8"></label>
      <label>Reason <input name="reason" required></label>
      <label>Operator <input name="operator_id" required size="10"></label>
      <label><input name="clamp" type="checkbox"> clamp</label>
      <button>Submit</button>
    </fieldset>
  </form>
</section>
<script>
const $ = (id) => document.getElementById(id);
const lookup = $("lookup");
lookup.token.value = sessionStorage.getItem("loyalty-token") || "";
const base = () => {
  const p = encodeURIComponent(lookup.program.value.trim());
  const c = encodeURIComponent(lookup.customer.value.trim());
  return { reads: `/v1/programs/${p}/customers/${c}`, admin: `/v1/admin/programs/${p}/customers/${c}` };
};
const say = (text, error) => { $("status").textContent = text; $("status").className = error ? "error" : ""; };
const fill = (table, head, rows) => {
  table.replaceChildren();
  const tr = table.insertRow();
  head.forEach((h) => { const th = document.createElement("th"); th.textContent = h; tr.appendChild(th); });
  rows.forEach((row) => {
    const r = table.insertRow();
    row.forEach((v, i) => {
      const c = r.insertCell();
      c.textContent = v ?? "";
      if (i > 0 && /^-?[0-9.]+$/.test(v ?? "")) c.className = "num";
    });
  });
};
const newKey = () => (window.crypto && crypto.randomUUID) ? crypto.randomUUID()
  : `admin-${Date.now()}-${Math.random().toString(16).slice(2)}`;
async function get(url) {
  const response = await fetch(url);
  const body = await response.json();
  if (!response.ok) throw new Error(body.message || response.statusText);
  return body;
}
async function show() {
  const { reads } = base();
  say("Loading ...");
  try {
    const [balance, expirations, history] = await Promise.all(
      [get(`${reads}/balance`), get(`${reads}/expirations`), get(`${reads}/history?limit=50`)]);
    fill($("balance"), ["field", "value"], ["current", "promised", "lifetime_earned", "redeemed", "expired",
      "returned", "tier", "seq", "updated_at"].map((k) => [k, balance[k] == null ? "" : String(balance[k])]));
    fill($("expirations"), ["usable through", "points"], expirations.groups.map((g) => [g.date, g.points]));
    fill($("history"), ["seq", "entry"], history.items.map((e) => [String(e.seq), e.text]));
    $("result").hidden = false;
    say("");
  } catch (e) { $("result").hidden = true; say(e.message, true); }
}
lookup.addEventListener("submit", (e) => {
  e.preventDefault();
  sessionStorage.setItem("loyalty-token", lookup.token.value);
  show();
});
$("adjust").addEventListener("submit", async (e) => {
  e.preventDefault();
  const f = e.target;
  const body = { direction: f.direction.value, points: f.points.value, reason: f.reason.value,
                 operator_id: f.operator_id.value, clamp: f.clamp.checked };
  const headers = { "Content-Type": "application/json", "Idempotency-Key": newKey() };
  if (lookup.token.value) headers.Authorization = `Bearer ${lookup.token.value}`;
  const response = await fetch(`${base().admin}/adjustments`, { method: "POST", headers, body: JSON.stringify(body) });
  const answer = await response.json();
  if (!response.ok) {
    const fields = (answer.fields || []).map((x) => `${x.field}: ${x.message}`).join("; ");
    say(`${answer.message}${fields ? " (" + fields + ")" : ""}`, true);
    return;
  }
  say(`Adjustment ${answer.event_id} accepted; it shows here once the worker has applied it.`);
  setTimeout(show, 1500);
});
</script>
</body>
</html>
"""
