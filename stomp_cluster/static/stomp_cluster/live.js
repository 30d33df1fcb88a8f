/* Live refresh of stomp_cluster's admin pages ("Live connections", "Nodes").
 *
 * The page's #content-main carries data-live-url (a JSON endpoint of the ModelAdmin,
 * answering the page's own query string) and data-live-interval (seconds). Every interval
 * we fetch it and patch the table in place, row by row, keyed by data-key:
 *
 *   - rows still present keep their element, so ticked checkboxes, opened <details> and
 *     keyboard focus survive; only texts and attributes that changed are written;
 *   - new rows are cloned from the <template> named by data-row-template and filled;
 *   - rows that are gone are removed, and a polite live region says how many came and went.
 *
 * Inside a row, data-field="name" sets the text, data-attrs="attr=name;attr=name" sets
 * attributes and data-list="subscriptions" fills a list. Elements marked
 * data-summary="name" take the JSON's summary[name]. No framework, no inline script.
 *
 * What we write for people comes translated from the page, as JSON in the element
 * #stomp-live-texts (the ModelAdmin's live_texts): "%(name)s" in a text is replaced by a
 * value, as in Django's gettext strings.
 */
(function () {
  "use strict";

  const root = document.querySelector("[data-live-url]");
  if (!root) {
    return;
  }
  const url = root.dataset.liveUrl;
  const interval = Math.max(1, Number(root.dataset.liveInterval) || 3) * 1000;
  const tbody = root.querySelector("[data-live-rows]");
  const template = document.getElementById(root.dataset.rowTemplate);
  const empty = root.querySelector("[data-live-empty]");
  const errorBox = root.querySelector("[data-live-error]");
  const state = root.querySelector("[data-live-state]");
  const announce = root.querySelector("[data-live-announce]");
  const toggle = root.querySelector("[data-live-toggle]");
  const texts = JSON.parse(document.getElementById("stomp-live-texts").textContent);
  let paused = false;

  function text(key, values) {
    return texts[key].replace(/%\((\w+)\)s/g, function (match, name) {
      return String(values[name]);
    });
  }
  let timer = null;
  let inFlight = false;

  function setText(el, value) {
    const text = value === null || value === undefined ? "" : String(value);
    if (el.textContent !== text) {
      el.textContent = text;
    }
  }

  function fillList(list, items) {
    // Subscriptions: <li><code>destination</code> <span class="quiet">id … · ack</span></li>
    const wanted = (items || []).map(function (sub) {
      return sub.destination + "\u0000" + sub.id + "\u0000" + sub.ack;
    });
    if (list.dataset.current === wanted.join("\u0001")) {
      return;
    }
    list.dataset.current = wanted.join("\u0001");
    list.replaceChildren();
    (items || []).forEach(function (sub) {
      const li = document.createElement("li");
      const code = document.createElement("code");
      code.textContent = sub.destination;
      const note = document.createElement("span");
      note.className = "quiet";
      note.textContent = "id " + sub.id + " · " + sub.ack;
      li.append(code, " ", note);
      list.appendChild(li);
    });
  }

  function fill(tr, row) {
    tr.dataset.key = row.key;
    tr.querySelectorAll("[data-field]").forEach(function (el) {
      setText(el, row[el.dataset.field]);
    });
    tr.querySelectorAll("[data-attrs]").forEach(function (el) {
      el.dataset.attrs.split(";").forEach(function (pair) {
        const parts = pair.split("=");
        const value = String(row[parts[1]]);
        if (el.getAttribute(parts[0]) !== value) {
          el.setAttribute(parts[0], value);
        }
      });
    });
    tr.querySelectorAll("[data-list]").forEach(function (list) {
      fillList(list, row[list.dataset.list]);
    });
  }

  function render(data) {
    const existing = new Map();
    tbody.querySelectorAll(":scope > tr[data-key]").forEach(function (tr) {
      existing.set(tr.dataset.key, tr);
    });
    let added = 0;
    let previous = null;
    data.rows.forEach(function (row) {
      let tr = existing.get(row.key);
      if (tr) {
        existing.delete(row.key);
      } else {
        tr = template.content.firstElementChild.cloneNode(true);
        added += 1;
      }
      fill(tr, row);
      // Only move a row that is out of place: moving an element drops its focus.
      const expected = previous ? previous.nextElementSibling : tbody.firstElementChild;
      if (tr !== expected) {
        tbody.insertBefore(tr, expected);
      }
      previous = tr;
    });
    const removed = existing.size;
    existing.forEach(function (tr) {
      tr.remove();
    });
    if (empty) {
      empty.hidden = data.rows.length > 0;
    }
    Object.entries(data.summary || {}).forEach(function (entry) {
      root.querySelectorAll('[data-summary="' + entry[0] + '"]').forEach(function (el) {
        setText(el, entry[1]);
      });
    });
    if ((added || removed) && announce) {
      const parts = [];
      if (added) {
        parts.push(text("added", { count: added }));
      }
      if (removed) {
        parts.push(text("removed", { count: removed }));
      }
      announce.textContent = text("announce", { changes: parts.join(", ") });
    }
    updateCounter();
  }

  function showError(message) {
    if (!errorBox) {
      return;
    }
    errorBox.hidden = !message;
    setText(errorBox, message || "");
  }

  function stamp() {
    return new Date().toLocaleTimeString();
  }

  function poll() {
    if (paused || inFlight || document.hidden) {
      return;
    }
    inFlight = true;
    fetch(url + window.location.search, {
      credentials: "same-origin",
      headers: { Accept: "application/json" },
    })
      .then(function (response) {
        if (response.redirected) {
          throw new Error(texts.sessionEnded);
        }
        return response.json().then(function (data) {
          return { response: response, data: data };
        });
      })
      .then(function (result) {
        if (result.data.rows) {
          render(result.data);
        }
        showError(result.data.error);
        setText(state, text("updated", { time: stamp() }));
        root.dataset.liveUpdatedAt = String(Date.now());
      })
      .catch(function (err) {
        setText(state, text("failed", { time: stamp(), error: err.message }));
      })
      .finally(function () {
        inFlight = false;
      });
  }

  function start() {
    if (timer === null) {
      timer = window.setInterval(poll, interval);
    }
  }

  function stop() {
    if (timer !== null) {
      window.clearInterval(timer);
      timer = null;
    }
  }

  if (toggle) {
    toggle.addEventListener("click", function () {
      paused = !paused;
      toggle.setAttribute("aria-pressed", String(paused));
      toggle.textContent = paused ? texts.resume : texts.pause;
      setText(state, paused ? texts.paused : texts.resuming);
      if (!paused) {
        poll();
      }
    });
  }

  document.addEventListener("visibilitychange", function () {
    if (!document.hidden) {
      poll();
    }
  });

  // Selection: "select all" and the counter, for the rows present now and later.
  const selectAll = document.getElementById("action-toggle");
  const counter = root.querySelector("[data-selection-counter]");

  function boxes() {
    return Array.from(tbody.querySelectorAll("input.action-select"));
  }

  function updateCounter() {
    const all = boxes();
    const checked = all.filter(function (box) {
      return box.checked;
    }).length;
    if (counter) {
      setText(counter, text("selected", { checked: checked, total: all.length }));
    }
    if (selectAll) {
      selectAll.checked = all.length > 0 && checked === all.length;
      selectAll.indeterminate = checked > 0 && checked < all.length;
    }
    tbody.querySelectorAll(":scope > tr").forEach(function (tr) {
      const box = tr.querySelector("input.action-select");
      tr.classList.toggle("selected", Boolean(box && box.checked));
    });
  }

  if (selectAll) {
    selectAll.addEventListener("change", function () {
      boxes().forEach(function (box) {
        box.checked = selectAll.checked;
      });
      updateCounter();
    });
  }
  tbody.addEventListener("change", function (event) {
    if (event.target.matches("input.action-select")) {
      updateCounter();
    }
  });

  updateCounter();
  start();
})();
