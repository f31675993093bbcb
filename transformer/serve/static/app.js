// The playground of `transformer serve`: translate a sentence, show the n-best list and, on hovering over
// (or focusing) an output token, shade the source tokens by the cross-attention weight it gave them.
// Plain browser JavaScript, no build step; the JSON API is GET api/info and POST api/translate.
"use strict";

const $ = (id) => document.getElementById(id);

// The last answer's attention ({source_tokens, target_tokens, cross[layer][head][target][source]}), and
// the index of the output token whose attention is shown (null: none yet).
const state = { attention: null, active: null };

// The shade of a source token: this colour, with opacity = weight / the row's largest weight.
const SHADE = [37, 99, 235];

async function callApi(path, body) {
  const options = body === undefined ? {} : {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  };
  const response = await fetch(path, options);
  let data = null;
  try {
    data = await response.json();
  } catch {
    // not JSON (a proxy's error page, say): the status line below says what happened
  }
  if (!response.ok) throw new Error(errorText(data, response));
  return data;
}

// FastAPI's errors: {"detail": "message"} or, for a request that fails validation, {"detail": [{loc, msg}]}.
function errorText(data, response) {
  const detail = data && data.detail;
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {
    return detail.map((d) => (Array.isArray(d.loc) ? `${d.loc.slice(1).join(".")}: ` : "") + d.msg).join("; ");
  }
  if (detail) return JSON.stringify(detail);
  return `The server answered ${response.status} ${response.statusText}`.trim();
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

async function loadInfo() {
  try {
    const info = await callApi("api/info");
    const beam = info.decode && info.decode.beam;
    $("model-info").textContent = `Task: ${info.task} · model: ${info.model_type}` +
      (beam ? ` · default beam size ${beam}` : "");
    if (beam) $("beam").placeholder = String(beam);
    const limits = info.limits || {};
    if (limits.max_beam) $("beam").max = String(limits.max_beam);
    if (limits.max_nbest) $("nbest").max = String(limits.max_nbest);
    if (info.attention === false) {
      $("want-attention").checked = false;
      $("want-attention").disabled = true;
    }
    if (Array.isArray(info.endpoints) && !info.endpoints.includes("/api/translate")) {
      $("translate").disabled = true;
      showError(`This page translates, but this model's task is ${info.task}: ` +
        `its endpoints are ${info.endpoints.join(", ") || "none"} (see /docs).`);
    }
  } catch (error) {
    $("model-info").textContent = "";
    showError(`Could not read the model's description: ${error.message}`);
  }
}

function optionalInt(input) {
  return input.value.trim() === "" ? null : Number.parseInt(input.value, 10);
}

async function translate(event) {
  event.preventDefault();
  const button = $("translate");
  button.disabled = true;
  $("status").textContent = "Translating…";
  showError("");
  try {
    const answer = await callApi("api/translate", {
      text: $("source").value,
      nbest: optionalInt($("nbest")) || 1,
      beam: optionalInt($("beam")),
      attention: $("want-attention").checked,
    });
    render(answer);
    $("status").textContent = "";
  } catch (error) {
    $("status").textContent = "";
    showError(error.message);
  } finally {
    button.disabled = false;
  }
}

function render(answer) {
  $("translation").textContent = answer.translation;
  $("result").hidden = false;
  renderNbest(answer.nbest || []);
  renderAttention(answer.attention || null);
}

function renderNbest(hypotheses) {
  const list = $("nbest-list");
  list.replaceChildren(...hypotheses.map((hypothesis) => {
    const item = document.createElement("li");
    const text = document.createElement("span");
    text.className = "hypothesis";
    text.textContent = hypothesis.text;
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = hypothesis.score === null ? "−∞" : hypothesis.score.toFixed(3);
    score.title = "the search's score of this hypothesis (higher is better)";
    item.append(text, " ", score);
    return item;
  }));
  $("nbest-section").hidden = hypotheses.length === 0;
}

function fillSelect(select, options, keep) {
  const previous = select.value;
  select.replaceChildren(...options.map(([value, label]) => new Option(label, value)));
  const values = options.map(([value]) => value);
  select.value = keep && values.includes(previous) ? previous : values[values.length - 1];
}

function renderAttention(attention) {
  state.attention = attention;
  state.active = null;
  const section = $("attention");
  if (!attention || !attention.cross || attention.cross.length === 0) {
    section.hidden = true;
    return;
  }
  const layers = attention.cross.length;
  const heads = attention.cross[0].length;
  fillSelect($("layer"), [...Array(layers).keys()].map((l) => [String(l), `${l + 1} of ${layers}`]), true);
  const headOptions = [...Array(heads).keys()].map((h) => [String(h), `${h + 1} of ${heads}`]);
  fillSelect($("head"), [...headOptions, ["mean", "Average of heads"]], true);

  $("target-tokens").replaceChildren(...attention.target_tokens.map((token, t) => {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "token target";
    button.textContent = token;
    button.dataset.index = String(t);
    button.setAttribute("aria-pressed", "false");
    return button;
  }));
  $("source-tokens").replaceChildren(...attention.source_tokens.map((token) => {
    const span = document.createElement("span");
    span.className = "token source";
    span.textContent = token;
    return span;
  }));
  $("attention-caption").textContent = "";
  section.hidden = false;
}

// The weights output token t gave the source tokens, in the chosen layer and head (or averaged over heads).
function weightsOf(t) {
  const layer = state.attention.cross[Number($("layer").value)];
  const head = $("head").value;
  if (head !== "mean") return layer[Number(head)][t];
  const rows = layer.map((headWeights) => headWeights[t]);
  return rows[0].map((_, s) => rows.reduce((sum, row) => sum + row[s], 0) / rows.length);
}

function highlight(t) {
  if (!state.attention) return;
  state.active = t;
  for (const button of $("target-tokens").children) {
    button.setAttribute("aria-pressed", String(Number(button.dataset.index) === t));
  }
  const weights = weightsOf(t);
  const largest = Math.max(...weights);
  const spans = $("source-tokens").children;
  weights.forEach((weight, s) => {
    if (s >= spans.length) return;
    const opacity = largest > 0 ? weight / largest : 0;
    spans[s].style.backgroundColor = `rgba(${SHADE.join(", ")}, ${opacity.toFixed(3)})`;
    spans[s].style.color = opacity > 0.55 ? "#fff" : "";
    spans[s].title = `weight ${(100 * weight).toFixed(1)}%`;
  });
  const head = $("head").value === "mean" ? "average of heads" : `head ${Number($("head").value) + 1}`;
  $("attention-caption").textContent = `Attention of “${state.attention.target_tokens[t]}” ` +
    `(layer ${Number($("layer").value) + 1}, ${head}); darkest: ` +
    `“${state.attention.source_tokens[weights.indexOf(largest)]}”, ${(100 * largest).toFixed(1)}%.`;
}

function onTokenEvent(event) {
  const button = event.target.closest("button.token");
  if (button) highlight(Number(button.dataset.index));
}

function redraw() {
  if (state.active !== null) highlight(state.active);
}

document.addEventListener("DOMContentLoaded", () => {
  $("translate-form").addEventListener("submit", translate);
  $("target-tokens").addEventListener("mouseover", onTokenEvent);
  $("target-tokens").addEventListener("focusin", onTokenEvent);
  $("target-tokens").addEventListener("click", onTokenEvent);
  $("layer").addEventListener("change", redraw);
  $("head").addEventListener("change", redraw);
  loadInfo();
});
