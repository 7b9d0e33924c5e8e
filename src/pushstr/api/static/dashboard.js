// pushstr's dashboard: polls /status, keeps a rolling window of samples here (the server keeps none) and draws
// rates from the differences between samples. Everything shown is set as text, never as markup.
"use strict";

(() => {
  const POLL_MS = 1000;
  const RETRY_MS = 5000;
  const WINDOW_SECONDS = 300;
  const MIN_SPAN_SECONDS = 10;
  const RATE_SECONDS = 5;
  const LATENCY_SECONDS = 30;
  const TOKEN_KEY = "pushstr.dashboard.token";
  const SVG = "http://www.w3.org/2000/svg";
  const OUTCOMES = ["delivered", "retry", "dead", "stale_dead", "rejected", "gave_up"];
  const CHART = { width: 600, height: 170, left: 48, right: 8, top: 10, bottom: 20 };

  const samples = []; // {t, doc}, oldest first
  let timer = null;

  const $ = (id) => document.getElementById(id);

  // -- numbers ---------------------------------------------------------------------------------------------------

  const integer = (n) => Math.round(n).toLocaleString("en-US");

  function rate(n) {
    if (n === null || !Number.isFinite(n)) return "–";
    return n < 10 ? n.toFixed(1) : integer(n);
  }

  function seconds(s) {
    if (s === null || !Number.isFinite(s)) return "–";
    if (s < 1) return `${Math.round(s * 1000)} ms`;
    if (s < 120) return `${s.toFixed(1)} s`;
    if (s < 7200) return `${Math.round(s / 60)} min`;
    if (s < 172800) return `${(s / 3600).toFixed(1)} h`;
    return `${Math.round(s / 86400)} d`;
  }

  function niceCeiling(value) {
    if (!(value > 0)) return 1;
    const power = 10 ** Math.floor(Math.log10(value));
    const step = [1, 2, 2.5, 5, 10].find((m) => m * power >= value);
    return step * power;
  }

  // The `q` quantile of a histogram (cumulative counts, the last one +Inf), interpolated within its bucket.
  function quantile(q, bounds, cumulative) {
    const total = cumulative[cumulative.length - 1] || 0;
    if (total <= 0) return null;
    const rank = q * total;
    let below = 0;
    let lower = 0;
    for (let i = 0; i < bounds.length; i += 1) {
      if (cumulative[i] >= rank) return lower + ((bounds[i] - lower) * (rank - below)) / (cumulative[i] - below);
      below = cumulative[i];
      lower = bounds[i];
    }
    return bounds.length ? bounds[bounds.length - 1] : null;
  }

  // -- samples ---------------------------------------------------------------------------------------------------

  const admitted = (doc) => doc.events.admitted;
  const matched = (doc) => doc.events.matched;
  const outcome = (name) => (doc) => doc.pushes.outcomes[name] || 0;

  function record(doc) {
    const last = samples[samples.length - 1];
    // A restarted server counts from zero again: its totals cannot be compared with the old ones.
    if (last && (doc.started_at !== last.doc.started_at || doc.events.admitted < last.doc.events.admitted)) {
      samples.length = 0;
    }
    samples.push({ t: doc.time, doc });
    while (samples.length > 2 && samples[0].t < doc.time - WINDOW_SECONDS) samples.shift();
  }

  // The sample `span` seconds before the newest (or the oldest one there is).
  function before(span) {
    const newest = samples[samples.length - 1];
    let found = samples[0];
    for (const sample of samples) {
      if (sample.t > newest.t - span) break;
      found = sample;
    }
    return found;
  }

  function recentRate(get) {
    const newest = samples[samples.length - 1];
    const old = before(RATE_SECONDS);
    const dt = newest.t - old.t;
    return dt > 0 ? (get(newest.doc) - get(old.doc)) / dt : null;
  }

  // [t, per-second rate] between consecutive samples.
  function rateSeries(get) {
    const points = [];
    for (let i = 1; i < samples.length; i += 1) {
      const dt = samples[i].t - samples[i - 1].t;
      points.push([samples[i].t, dt > 0 ? Math.max(0, get(samples[i].doc) - get(samples[i - 1].doc)) / dt : null]);
    }
    return points;
  }

  const gaugeSeries = (get) => samples.map((sample) => [sample.t, get(sample.doc)]);

  // Latency quantiles of the requests made in the `span` seconds before `index`'s sample.
  function windowQuantile(q, index, span) {
    const now = samples[index];
    let old = samples[0];
    for (let i = 0; i < index; i += 1) {
      if (samples[i].t > now.t - span) break;
      old = samples[i];
    }
    const a = now.doc.latency;
    const b = old.doc.latency;
    if (old === now || a.bounds.length !== b.bounds.length) return null;
    return quantile(q, a.bounds, a.cumulative.map((count, i) => count - b.cumulative[i]));
  }

  function latencySeries(q) {
    return samples.map((sample, index) => {
      const value = windowQuantile(q, index, LATENCY_SECONDS);
      return [sample.t, value === null ? null : value * 1000];
    });
  }

  // -- drawing ---------------------------------------------------------------------------------------------------

  function svg(name, attributes) {
    const element = document.createElementNS(SVG, name);
    for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, String(value));
    return element;
  }

  function text(name, content, className) {
    const element = document.createElement(name);
    element.textContent = content;
    if (className) element.className = className;
    return element;
  }

  function drawChart(id, series) {
    const chart = $(id);
    const { width, height, left, right, top, bottom } = CHART;
    const newest = samples[samples.length - 1].t;
    // The window fills from the right as samples come; until it is full the chart spans what there is.
    const span = Math.max(MIN_SPAN_SECONDS, Math.min(WINDOW_SECONDS, newest - samples[0].t));
    const x0 = newest - span;
    let peak = 0;
    for (const { points } of series) for (const [, v] of points) if (v !== null && v > peak) peak = v;
    const yMax = niceCeiling(peak);
    const x = (t) => left + ((t - x0) / span) * (width - left - right);
    const y = (v) => top + (1 - v / yMax) * (height - top - bottom);
    const parts = [];
    for (const fraction of [0, 0.5, 1]) {
      const value = yMax * fraction;
      parts.push(svg("line", { x1: left, x2: width - right, y1: y(value), y2: y(value), class: "grid" }));
      const label = svg("text", { x: left - 6, y: y(value) + 4, class: "axis", "text-anchor": "end" });
      label.textContent = yMax < 10 && fraction === 0.5 ? value.toFixed(1) : integer(value);
      parts.push(label);
    }
    for (const [t, anchor, caption] of [[x0, "start", `−${seconds(span)}`], [newest, "end", "now"]]) {
      const label = svg("text", { x: x(t), y: height - 4, class: "axis", "text-anchor": anchor });
      label.textContent = caption;
      parts.push(label);
    }
    let drawn = 0;
    series.forEach(({ points }, index) => {
      let d = "";
      let pen = "M";
      for (const [t, v] of points) {
        if (v === null) {
          pen = "M";
          continue;
        }
        d += `${pen}${x(t).toFixed(1)},${y(v).toFixed(1)}`;
        pen = "L";
      }
      if (d) parts.push(svg("path", { d, class: `line c${index}` }));
      drawn = Math.max(drawn, points.filter(([, v]) => v !== null).length);
    });
    chart.replaceChildren(...parts);
    chart.dataset.points = String(drawn);
  }

  function drawLegend(id, series, format) {
    $(id).replaceChildren(
      ...series.map(({ name, points, shownAs }, index) => {
        const item = document.createElement("li");
        const last = points.length ? points[points.length - 1][1] : null;
        item.append(text("span", "", `swatch c${index}`), text("span", `${name} ${(shownAs || format)(last)}`));
        return item;
      }),
    );
  }

  function chart(id, legend, series, format) {
    drawChart(id, series);
    drawLegend(legend, series, format);
  }

  function setNumber(id, value) {
    const element = $(id);
    element.textContent = integer(value);
    element.dataset.value = String(value);
  }

  function row(cells, attributes = {}) {
    const tr = document.createElement("tr");
    for (const [key, value] of Object.entries(attributes)) tr.dataset[key] = value;
    for (const [content, className] of cells) tr.append(text("td", content, className));
    return tr;
  }

  function fillTable(id, rows) {
    $(id).tBodies[0].replaceChildren(...rows);
  }

  function render() {
    const newest = samples[samples.length - 1].doc;
    $("version").textContent = `v${newest.version}`;
    $("uptime").textContent = newest.started_at ? `up ${seconds(newest.time - newest.started_at)}` : "";

    $("rate-admitted").textContent = rate(recentRate(admitted));
    $("rate-matched").textContent = rate(recentRate(matched));
    $("rate-delivered").textContent = rate(recentRate(outcome("delivered")));
    setNumber("events-admitted", newest.events.admitted);
    setNumber("events-matched", newest.events.matched);
    setNumber("pushes-delivered", newest.pushes.outcomes.delivered || 0);
    setNumber("outbox-pending", newest.outbox.pending);
    setNumber("outbox-queued", newest.outbox.queued);
    $("outbox-oldest").textContent = seconds(newest.outbox.oldest_seconds);
    const index = samples.length - 1;
    for (const [name, q] of [["p50", 0.5], ["p90", 0.9], ["p99", 0.99]]) {
      $(`latency-${name}`).textContent = seconds(windowQuantile(q, index, LATENCY_SECONDS));
    }
    setNumber("registrations-total", newest.registrations.reduce((sum, entry) => sum + entry.count, 0));
    const connected = newest.relays.filter((relay) => relay.state === "connected").length;
    $("relays-connected").textContent = `${connected} / ${newest.relays.length}`;

    chart("chart-events", "legend-events", [
      { name: "admitted", points: rateSeries(admitted) },
      { name: "matched", points: rateSeries(matched) },
    ], (v) => `${rate(v)}/s`);
    const outcomes = [...OUTCOMES, ...Object.keys(newest.pushes.outcomes).filter((name) => !OUTCOMES.includes(name))];
    chart(
      "chart-pushes",
      "legend-pushes",
      outcomes.map((name) => ({ name, points: rateSeries(outcome(name)) })),
      (v) => `${rate(v)}/s`,
    );
    chart("chart-outbox", "legend-outbox", [
      { name: "pending", points: gaugeSeries((doc) => doc.outbox.pending), shownAs: integer },
      { name: "oldest", points: gaugeSeries((doc) => doc.outbox.oldest_seconds), shownAs: seconds },
    ]);
    chart("chart-latency", "legend-latency", [
      { name: "p50", points: latencySeries(0.5) },
      { name: "p90", points: latencySeries(0.9) },
      { name: "p99", points: latencySeries(0.99) },
    ], (v) => (v === null ? "–" : `${Math.round(v)} ms`));

    fillTable("outcomes", outcomes.map((name) => row(
      [[name], [integer(newest.pushes.outcomes[name] || 0), "n num"], [rate(recentRate(outcome(name))), "n"]],
      { outcome: name },
    )));
    const losses = [
      ...Object.entries(newest.pushes.dropped).map(([reason, count]) => [`dropped: ${reason}`, count]),
      ...Object.entries(newest.notifications)
        .filter(([result]) => result !== "queued")
        .map(([result, count]) => [`notification ${result.replace("_", " ")}`, count]),
      ["registrations pruned", newest.pushes.pruned],
    ];
    fillTable("losses", losses.map(([what, count]) => row([[what], [integer(count), "n num"]])));
    fillTable("registrations", newest.registrations.map((entry) => row(
      [[entry.dialect], [entry.platform], [integer(entry.count), "n num"]],
      { dialect: entry.dialect, platform: entry.platform },
    )));
    const refused = Object.entries(newest.events.rejected).filter(([, count]) => count > 0);
    fillTable("rejected", refused.length
      ? refused.map(([reason, count]) => row([[reason.replace("_", " ")], [integer(count), "n num"]]))
      : [row([["none yet", "muted"], [""]])]);
    fillTable("relays", newest.relays.map((relay) => row([
      [relay.relay, "url"],
      [relay.state, relay.state === "connected" ? "ok" : "bad"],
      [relay.mode],
      [integer(relay.connections), "n"],
      [`${relay.subscriptions.open} / ${relay.subscriptions.planned} / ${relay.subscriptions.allowed ?? "?"}`, "n"],
      [integer(relay.events), "n"],
      [integer(relay.reconnects), "n"],
      [relay.last_error || "", "error"],
    ], { relay: relay.relay })));
    const users = newest.user_relays;
    const states = Object.entries(users.by_state).map(([state, count]) => `${count} ${state}`).join(", ");
    $("user-relays").textContent = users.total
      ? `${users.total} relays named by users (${states}); the ${users.shown} busiest are listed above, by digest.`
      : "No relays named by users.";
  }

  // -- polling ---------------------------------------------------------------------------------------------------

  function setState(label, className) {
    const state = $("state");
    state.textContent = label;
    state.className = `state ${className}`;
  }

  function schedule(delay) {
    clearTimeout(timer);
    timer = setTimeout(poll, delay);
  }

  function askToken(reason) {
    $("board").hidden = true;
    $("login").hidden = false;
    $("login-error").textContent = reason;
    setState("token needed", "bad");
    $("token").focus();
  }

  async function poll() {
    const token = sessionStorage.getItem(TOKEN_KEY);
    const headers = { Accept: "application/json" };
    if (token) headers.Authorization = `Bearer ${token}`;
    let response;
    let doc;
    try {
      response = await fetch("status", { headers, cache: "no-store", signal: AbortSignal.timeout(RETRY_MS) });
      doc = await response.json();
    } catch {
      setState("unreachable", "bad");
      schedule(RETRY_MS);
      return;
    }
    if (response.status === 401) {
      if (token) sessionStorage.removeItem(TOKEN_KEY);
      askToken(token ? doc.reason : "");
      return; // polling starts again when a token is given
    }
    if (!response.ok) {
      setState(`error ${response.status}: ${doc.reason || ""}`, "bad");
      schedule(RETRY_MS);
      return;
    }
    record(doc);
    $("login").hidden = true;
    $("board").hidden = false;
    render();
    setState(`live · ${new Date(doc.time * 1000).toLocaleTimeString("en-GB")}`, "ok");
    schedule(POLL_MS);
  }

  function start() {
    // A token in the fragment (`/dashboard#token=…`) never reaches the server or its logs; it is kept for this
    // tab only and taken out of the address bar and history.
    const match = /^#token=(.+)$/.exec(window.location.hash);
    if (match) {
      sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(match[1]));
      history.replaceState(null, "", window.location.pathname + window.location.search);
    }
    $("login").addEventListener("submit", (event) => {
      event.preventDefault();
      sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
      $("token").value = "";
      poll();
    });
    poll();
  }

  start();
})();
