// keygate console: plain JavaScript, no libraries. Every value from the API is shown
// with textContent (names, owners and audit values are chosen by clients), never as
// HTML. A key revealed by a create or a rotation lives only in the page's DOM and in
// one closure until the operator leaves the view: never in storage, a cookie or a URL.
(function () {
  'use strict';

  var me = null; // the session: key_id, owner, admin, csrf_token (never a key)
  var main = document.getElementById('main');

  // ---- small helpers ----

  function el(tag, attrs) {
    var n = document.createElement(tag);
    if (attrs) {
      Object.keys(attrs).forEach(function (k) {
        var v = attrs[k];
        if (v === undefined || v === null || v === false) return;
        if (k === 'text') n.textContent = v;
        else if (k.slice(0, 2) === 'on') n.addEventListener(k.slice(2), v);
        else n.setAttribute(k, v === true ? '' : String(v));
      });
    }
    for (var i = 2; i < arguments.length; i++) add(n, arguments[i]);
    return n;
  }

  function add(n, c) {
    if (c === undefined || c === null || c === false) return;
    if (Array.isArray(c)) { c.forEach(function (x) { add(n, x); }); return; }
    n.appendChild(typeof c === 'string' || typeof c === 'number' ? document.createTextNode(String(c)) : c);
  }

  var svgNS = 'http://www.w3.org/2000/svg';
  function svg(tag, attrs, text) {
    var n = document.createElementNS(svgNS, tag);
    Object.keys(attrs || {}).forEach(function (k) { n.setAttribute(k, String(attrs[k])); });
    if (text !== undefined) n.textContent = text;
    return n;
  }

  function fmtTime(s) {
    if (!s) return '—';
    var d = new Date(s);
    if (isNaN(d.getTime())) return String(s);
    return d.toISOString().slice(0, 16).replace('T', ' ') + 'Z';
  }

  function rfc3339(d) { return d.toISOString().replace(/\.\d+Z$/, 'Z'); }

  function list(s) {
    return String(s || '').split(',').map(function (x) { return x.trim(); }).filter(function (x) { return x !== ''; });
  }

  var statusTimer = null;
  function say(msg) {
    var s = document.getElementById('status');
    s.textContent = msg;
    clearTimeout(statusTimer);
    statusTimer = setTimeout(function () { s.textContent = ''; }, 6000);
  }

  function errorText(e) {
    if (e && e.body) {
      var b = e.body;
      var err = b.error;
      if (err && typeof err === 'object' && err.message) return err.message + ' (' + (err.code || e.status) + ')';
      if (typeof err === 'string') return err + (b.message ? ': ' + b.message : '') + ' (' + e.status + ')';
      if (b.message) return b.message + ' (' + e.status + ')';
    }
    return (e && e.message) || 'request failed';
  }

  // ---- the API ----

  function ApiError(status, body) { this.status = status; this.body = body; this.message = 'HTTP ' + status; }

  function api(method, path, body) {
    var headers = { 'X-CSRF-Token': me ? me.csrf_token : '' };
    var init = { method: method, headers: headers, credentials: 'same-origin', cache: 'no-store', redirect: 'error' };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    return fetch(path, init).then(function (r) {
      return r.text().then(function (t) {
        var data = null;
        try { data = t ? JSON.parse(t) : null; } catch (e) { data = null; }
        if (r.status === 401 && path.indexOf('/console/') !== 0) {
          ended('Your session ended. Sign in again.');
        }
        if (!r.ok) throw new ApiError(r.status, data);
        return data;
      });
    });
  }

  function ended(msg) {
    me = null;
    showChrome();
    signIn(msg);
  }

  // ---- chrome and routing ----

  function showChrome() {
    var nav = document.getElementById('nav');
    var who = document.getElementById('who');
    var out = document.getElementById('logout');
    nav.hidden = who.hidden = out.hidden = !me;
    who.textContent = me ? 'Signed in: ' + (me.name || me.key_id) + ' (' + me.key_id + '), owner ' + me.owner +
      (me.admin ? ', admin' : ', api-keys') : '';
  }

  function route() {
    if (!me) { signIn(); return; }
    var parts = location.hash.replace(/^#\/?/, '').split('/').map(function (p) {
      try { return decodeURIComponent(p); } catch (e) { return ''; }
    });
    var page = parts[0] || 'keys';
    document.querySelectorAll('#nav a').forEach(function (a) {
      if (a.getAttribute('data-page') === page) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
    });
    if (page === 'usage' && parts[1]) usagePage(parts[1]);
    else if (page === 'unused') unusedPage();
    else if (page === 'audit') auditPage();
    else keysPage(parts[1] || '');
  }

  // view replaces the page's content (and with it any revealed key) and puts the
  // keyboard focus on its heading.
  function view(title) {
    main.textContent = '';
    var h = el('h1', { tabindex: '-1', text: title });
    main.appendChild(h);
    document.title = title + ' · keygate console';
    setTimeout(function () { h.focus(); }, 0);
    return h;
  }

  // ---- sign-in ----

  function signIn(msg) {
    view('Sign in');
    var key = el('input', { id: 'key', name: 'key', type: 'password', autocomplete: 'off', spellcheck: 'false',
      autocapitalize: 'off', 'aria-describedby': 'key-hint' });
    var errP = el('p', { id: 'signin-error', class: 'error', role: 'alert', text: msg || '' });
    var form = el('form', { id: 'signin', class: 'card signin', autocomplete: 'off', onsubmit: function (ev) {
      ev.preventDefault();
      var k = key.value;
      key.value = '';
      if (!k) { errP.textContent = 'Paste a key with the admin or api-keys scope.'; key.focus(); return; }
      start({ key: k });
    } },
    el('div', { class: 'field' },
      el('label', { for: 'key', text: 'Key (admin or api-keys scope)' }), key,
      el('p', { id: 'key-hint', class: 'hint', text: 'The key is sent once to sign in; the console keeps only a session.' })),
    el('div', { class: 'row' },
      el('button', { id: 'signin-key', type: 'submit', text: 'Sign in' }),
      el('button', { id: 'signin-cert', type: 'button', class: 'plain', text: 'Sign in with client certificate',
        onclick: function () { start({ certificate: true }); } })),
    errP);
    main.appendChild(form);

    function start(body) {
      errP.textContent = '';
      fetch('/console/session', { method: 'POST', headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify(body), credentials: 'same-origin', cache: 'no-store' }).then(function (r) {
        return r.text().then(function (t) {
          var data = null;
          try { data = JSON.parse(t); } catch (e) { data = null; }
          if (!r.ok) throw new ApiError(r.status, data);
          return data;
        });
      }).then(function (s) {
        me = s;
        showChrome();
        if (location.hash === '' || location.hash === '#/keys') route(); else location.hash = '#/keys';
      }).catch(function (e) {
        errP.textContent = 'Sign-in refused: ' + errorText(e);
        key.focus();
      });
    }
  }

  function signOut() {
    api('DELETE', '/console/session').then(function () {
      me = null;
      showChrome();
      history.replaceState(null, '', location.pathname);
      signIn('Signed out.');
    }).catch(function (e) { say('Sign-out failed: ' + errorText(e)); });
  }

  // ---- dialogs (native <dialog>: modal, Escape closes, focus returns) ----

  function ask(title, body, okLabel, danger) {
    return new Promise(function (resolve) {
      var opener = document.activeElement;
      var d = el('dialog', { 'aria-labelledby': 'dialog-title' });
      var ok = el('button', { type: 'submit', id: 'dialog-ok', class: danger ? 'danger' : null, text: okLabel });
      var form = el('form', { method: 'dialog' },
        el('h2', { id: 'dialog-title', text: title }), body,
        el('div', { class: 'buttons' },
          el('button', { type: 'button', id: 'dialog-cancel', class: 'plain', text: 'Cancel',
            onclick: function () { d.close('cancel'); } }),
          ok));
      form.addEventListener('submit', function (ev) { ev.preventDefault(); d.close('ok'); });
      d.appendChild(form);
      d.addEventListener('close', function () {
        var yes = d.returnValue === 'ok';
        d.remove();
        if (opener && opener.isConnected) opener.focus();
        resolve(yes);
      });
      document.body.appendChild(d);
      d.showModal();
      var first = d.querySelector('input');
      (first || ok).focus();
    });
  }

  // ---- the one-time reveal of a new key ----

  function reveal(where, title, view) {
    where.textContent = '';
    var key = view.key; // only here and in the node below, until this view goes
    var code = el('code', { id: 'revealed-key', text: key });
    var copied = el('span', { role: 'status' });
    var box = el('section', { class: 'reveal', id: 'reveal', 'aria-labelledby': 'reveal-title' },
      el('h2', { id: 'reveal-title', tabindex: '-1', text: title }),
      el('p', { text: 'Copy this key now: keygate shows it this once and keeps no copy. It is not saved in the ' +
        'browser and disappears when you leave or close this page.' }),
      el('p', null, 'Key ', el('strong', { text: view.name }), ' (' + view.id + '), hint ', el('code', { text: view.hint })),
      code,
      el('div', { class: 'row' },
        el('button', { type: 'button', id: 'copy-key', text: 'Copy key', onclick: function () {
          copy(key, code).then(function () { copied.textContent = 'Copied.'; },
            function () { copied.textContent = 'Copy failed: select the key and copy it.'; });
        } }),
        el('button', { type: 'button', id: 'dismiss-key', class: 'plain', text: 'Done', onclick: function () {
          key = null; where.textContent = ''; say('The key is no longer shown.');
        } }),
        copied));
    where.appendChild(box);
    box.querySelector('h2').focus();
  }

  function copy(text, node) {
    if (navigator.clipboard && navigator.clipboard.writeText) {
      return navigator.clipboard.writeText(text).catch(function () { return selectCopy(node); });
    }
    return selectCopy(node);
  }

  function selectCopy(node) {
    var r = document.createRange();
    r.selectNodeContents(node);
    var s = window.getSelection();
    s.removeAllRanges();
    s.addRange(r);
    var ok = document.execCommand && document.execCommand('copy');
    return ok ? Promise.resolve() : Promise.reject(new Error('copy'));
  }

  // ---- keys ----

  function cell(label, content, cls) { return el('td', { 'data-label': label, class: cls }, content); }

  function keyTable(id, caption, keys, actions, withOwner) {
    var head = ['Name', 'Hint', 'Scopes', 'Status', 'Created', 'Expires', 'Last used'].concat(withOwner ? ['Owner'] : [], ['Actions']);
    return el('table', { id: id, class: 'cards' },
      el('caption', { text: caption }),
      el('thead', null, el('tr', null, head.map(function (h) { return el('th', { scope: 'col', text: h }); }))),
      el('tbody', null, keys.length === 0 ? el('tr', null, el('td', { colspan: head.length, text: 'No keys.' })) :
        keys.map(function (k) {
          return el('tr', { 'data-id': k.id },
            cell('Name', k.name, 'name'),
            cell('Hint', el('code', { text: k.hint })),
            cell('Scopes', (k.scopes || []).join(', ') || '—', 'scopes'),
            cell('Status', el('span', { class: 'st-' + k.status, text: k.status }), 'status'),
            cell('Created', fmtTime(k.created_at)),
            cell('Expires', k.expires_at ? fmtTime(k.expires_at) : 'never'),
            cell('Last used', k.last_used_at ? fmtTime(k.last_used_at) : 'never'),
            withOwner ? cell('Owner', k.owner, 'owner') : null,
            cell('Actions', actions(k), 'actions'));
        })));
  }

  function keysPage(owner) {
    view('Keys');
    if (!me.admin) owner = me.owner;
    var revealBox = el('div', { id: 'reveal-box' });
    var listBox = el('div', { id: 'key-list' }, el('p', { text: 'Loading…' }));
    var ownerSel = null;
    if (me.admin) {
      ownerSel = el('select', { id: 'owner', onchange: function () {
        location.hash = '#/keys/' + encodeURIComponent(ownerSel.value);
      } }, el('option', { value: '', text: 'All owners' }));
      main.appendChild(el('div', { class: 'field' }, el('label', { for: 'owner', text: 'Owner' }), ownerSel));
    } else {
      main.appendChild(el('p', null, 'Owner: ', el('strong', { text: me.owner })));
    }
    main.appendChild(createForm(owner, revealBox, load));
    main.appendChild(revealBox);
    main.appendChild(listBox);

    function load() {
      return api('GET', '/api-keys').then(function (keys) {
        if (ownerSel) {
          var owners = {};
          keys.forEach(function (k) { owners[k.owner] = true; });
          if (owner) owners[owner] = true;
          while (ownerSel.options.length > 1) ownerSel.remove(1);
          Object.keys(owners).sort().forEach(function (o) {
            ownerSel.appendChild(el('option', { value: o, text: o, selected: o === owner }));
          });
        }
        var shown = keys.filter(function (k) { return !owner || k.owner === owner; });
        listBox.textContent = '';
        listBox.appendChild(keyTable('keys', owner ? 'Keys of ' + owner : 'Keys of all owners', shown, function (k) {
          return keyActions(k, revealBox, load);
        }));
      }).catch(function (e) {
        listBox.textContent = '';
        listBox.appendChild(el('p', { class: 'error', role: 'alert', text: 'Could not list keys: ' + errorText(e) }));
      });
    }
    load();
  }

  function keyActions(k, revealBox, reload) {
    var live = k.status === 'active' || k.status === 'rotating';
    return [
      el('a', { href: '#/usage/' + encodeURIComponent(k.id), 'aria-label': 'Usage of ' + k.name, text: 'Usage' }),
      el('button', { type: 'button', class: 'plain', 'data-action': 'rotate', disabled: k.status !== 'active',
        'aria-label': 'Rotate ' + k.name, text: 'Rotate', onclick: function () { rotateKey(k, revealBox, reload); } }),
      me.admin ? el('button', { type: 'button', class: 'plain', 'data-action': 'scopes', disabled: !live,
        'aria-label': 'Change scopes of ' + k.name, text: 'Scopes', onclick: function () { scopeKey(k, reload); } }) : null,
      el('button', { type: 'button', class: 'danger', 'data-action': 'revoke', disabled: k.status === 'revoked',
        'aria-label': 'Revoke ' + k.name, text: 'Revoke', onclick: function () { revokeKey(k, reload); } })
    ];
  }

  function field(id, label, input, hint) {
    input.id = id;
    if (hint) input.setAttribute('aria-describedby', id + '-hint');
    return el('div', { class: 'field' }, el('label', { for: id, text: label }), input,
      hint ? el('p', { class: 'hint', id: id + '-hint', text: hint }) : null);
  }

  function createForm(owner, revealBox, reload) {
    var name = el('input', { type: 'text', required: true, maxlength: '128', autocomplete: 'off' });
    var ownerIn = me.admin ? el('input', { type: 'text', value: owner || me.owner, autocomplete: 'off' }) : null;
    var expires = el('select', null,
      el('option', { value: '', text: me.admin ? 'Never' : 'Default (yours)' }),
      ['1d', '7d', '30d', '90d', '365d'].map(function (d) { return el('option', { value: d, text: d }); }));
    var scopes = el('input', { type: 'text', autocomplete: 'off', placeholder: 'chat:completions, models:read' });
    var models = el('input', { type: 'text', autocomplete: 'off', placeholder: 'gpt-4o*, claude-*' });
    var plan = me.admin ? el('input', { type: 'text', autocomplete: 'off' }) : null;
    var err = el('p', { class: 'error', role: 'alert' });
    var form = el('form', { id: 'create', class: 'card', autocomplete: 'off', onsubmit: function (ev) {
      ev.preventDefault();
      err.textContent = '';
      var body = { name: name.value.trim(), scopes: list(scopes.value), models: list(models.value) };
      if (ownerIn && ownerIn.value.trim()) body.owner = ownerIn.value.trim();
      if (expires.value) body.expires_in = expires.value;
      if (plan && plan.value.trim()) body.plan = plan.value.trim();
      if (body.scopes.length === 0) delete body.scopes;
      if (body.models.length === 0) delete body.models;
      api('POST', '/api-keys', body).then(function (created) {
        form.reset();
        reveal(revealBox, 'New key created', created);
        reload();
      }).catch(function (e) { err.textContent = 'Could not create the key: ' + errorText(e); });
    } },
    el('h2', { text: 'Create a key' }),
    el('div', { class: 'row' },
      field('create-name', 'Name', name),
      ownerIn ? field('create-owner', 'Owner', ownerIn) : null,
      field('create-expires', 'Expires in', expires)),
    el('div', { class: 'row' },
      field('create-scopes', 'Scopes', scopes, 'Comma-separated; empty: ' + (me.admin ? 'none' : 'yours')),
      field('create-models', 'Models', models, 'Comma-separated allow-list; empty: any' + (me.admin ? '' : ' within yours')),
      plan ? field('create-plan', 'Plan', plan) : null),
    el('button', { type: 'submit', id: 'create-submit', text: 'Create key' }), err);
    return form;
  }

  function rotateKey(k, revealBox, reload) {
    var grace = el('input', { type: 'text', autocomplete: 'off', placeholder: 'e.g. 7d; empty: the default; 0: now' });
    ask('Rotate ' + k.name + '?', [
      el('p', { text: 'A new key replaces ' + k.name + ' (' + k.hint + '). The old key stays valid for the grace period.' }),
      field('rotate-grace', 'Grace', grace)
    ], 'Rotate').then(function (yes) {
      if (!yes) return;
      var body = grace.value.trim() ? { grace: grace.value.trim() } : undefined;
      api('POST', '/api-keys/' + encodeURIComponent(k.id) + '/rotate', body).then(function (rot) {
        reveal(revealBox, 'Successor of ' + k.name, rot);
        reload();
      }).catch(function (e) { say('Could not rotate: ' + errorText(e)); });
    });
  }

  function revokeKey(k, reload) {
    return ask('Revoke ' + k.name + '?', el('p', { text: 'Requests with ' + k.name + ' (' + k.hint +
      ') are refused from now on. This cannot be undone.' }), 'Revoke', true).then(function (yes) {
      if (!yes) return;
      return api('DELETE', '/api-keys/' + encodeURIComponent(k.id)).then(function () {
        say('Revoked ' + k.name + '.');
        return reload();
      }).catch(function (e) { say('Could not revoke: ' + errorText(e)); });
    });
  }

  function scopeKey(k, reload) {
    var sc = el('input', { type: 'text', autocomplete: 'off', value: (k.scopes || []).join(', ') });
    ask('Scopes of ' + k.name, field('scopes-input', 'Scopes (comma-separated)', sc), 'Save').then(function (yes) {
      if (!yes) return;
      api('PATCH', '/api-keys/' + encodeURIComponent(k.id), { scopes: list(sc.value) }).then(function () {
        say('Scopes of ' + k.name + ' changed.');
        reload();
      }).catch(function (e) { say('Could not change scopes: ' + errorText(e)); });
    });
  }

  // ---- usage ----

  var ranges = {
    hour: { label: 'Last hour, per minute', span: 3600e3, step: 'minute', ms: 60e3 },
    day: { label: 'Last 24 hours, per hour', span: 86400e3, step: 'hour', ms: 3600e3 },
    week: { label: 'Last 7 days, per hour', span: 7 * 86400e3, step: 'hour', ms: 3600e3 },
    month: { label: 'Last 30 days, per day', span: 30 * 86400e3, step: 'day', ms: 86400e3 }
  };
  var usageRange = 'day';

  function usagePage(id) {
    view('Usage');
    var h1 = main.querySelector('h1');
    main.appendChild(el('p', null, el('a', { href: '#/keys', text: '← Keys' })));
    var sel = el('select', { id: 'usage-range', onchange: function () { usageRange = sel.value; load(); } },
      Object.keys(ranges).map(function (r) { return el('option', { value: r, text: ranges[r].label, selected: r === usageRange }); }));
    main.appendChild(el('div', { class: 'field' }, el('label', { for: 'usage-range', text: 'Range' }), sel));
    var box = el('div', { id: 'usage' });
    main.appendChild(box);
    api('GET', '/api-keys/' + encodeURIComponent(id)).then(function (k) {
      h1.textContent = 'Usage of ' + k.name;
      document.title = h1.textContent + ' · keygate console';
    }).catch(function () {});

    function load() {
      var r = ranges[usageRange];
      var to = new Date(Math.ceil(Date.now() / r.ms) * r.ms);
      var from = new Date(to.getTime() - r.span);
      var base = '/api-keys/' + encodeURIComponent(id) + '/usage?from=' + rfc3339(from) + '&to=' + rfc3339(to) + '&step=' + r.step;
      box.textContent = 'Loading…';
      Promise.all(['', 'route', 'model', 'outcome'].map(function (by) {
        return api('GET', base + (by ? '&by=' + by : ''));
      })).then(function (res) {
        box.textContent = '';
        var total = res[0].total;
        var errors = sum(res[3].points, 'outcome').filter(function (g) { return g[0] !== 'allowed'; })
          .reduce(function (a, g) { return a + g[1]; }, 0);
        box.appendChild(el('p', null, 'Checks in range: ', el('span', { id: 'usage-total', class: 'big', text: String(total) }),
          ' · denied: ', el('span', { id: 'usage-errors', class: 'big', text: String(errors) }),
          ' (' + pct(errors, total) + ')'));
        box.appendChild(el('div', { class: 'charts' },
          timeChart('usage-volume', 'Request volume over time', res[0].points, from, to, r.ms),
          groupChart('usage-route', 'By route', sum(res[1].points, 'route'), total, false),
          groupChart('usage-model', 'By model', sum(res[2].points, 'model'), total, false),
          groupChart('usage-outcome', 'Outcomes (error rates by reason)', sum(res[3].points, 'outcome'), total, true)));
      }).catch(function (e) {
        box.textContent = '';
        box.appendChild(el('p', { class: 'error', role: 'alert', text: 'Could not read usage: ' + errorText(e) }));
      });
    }
    load();
  }

  function pct(n, total) { return total ? (100 * n / total).toFixed(1) + '%' : '0%'; }

  // sum totals the points per value of the dimension, largest first.
  function sum(points, dim) {
    var m = {};
    points.forEach(function (p) { var k = p[dim] || ''; m[k] = (m[k] || 0) + p.count; });
    return Object.keys(m).map(function (k) { return [k, m[k]]; }).sort(function (a, b) { return b[1] - a[1] || (a[0] < b[0] ? -1 : 1); });
  }

  function timeChart(id, title, points, from, to, stepMs) {
    var n = Math.max(1, Math.round((to - from) / stepMs));
    var counts = new Array(n).fill(0);
    points.forEach(function (p) {
      var i = Math.floor((new Date(p.time) - from) / stepMs);
      if (i >= 0 && i < n) counts[i] += p.count;
    });
    var max = Math.max.apply(null, counts.concat([1]));
    var W = 460, H = 160, L = 34, B = 22, T = 8, bw = (W - L - 4) / n;
    var s = svg('svg', { viewBox: '0 0 ' + W + ' ' + H, role: 'img', 'aria-labelledby': id + '-title' });
    s.appendChild(svg('title', { id: id + '-svgtitle' }, title + ': ' + points.reduce(function (a, p) { return a + p.count; }, 0) + ' checks'));
    s.appendChild(svg('line', { class: 'axis', x1: L, y1: H - B, x2: W, y2: H - B }));
    s.appendChild(svg('line', { class: 'axis', x1: L, y1: T, x2: L, y2: H - B }));
    s.appendChild(svg('text', { x: L - 4, y: T + 8, 'text-anchor': 'end' }, String(max)));
    s.appendChild(svg('text', { x: L - 4, y: H - B, 'text-anchor': 'end' }, '0'));
    s.appendChild(svg('text', { x: L, y: H - 6 }, fmtTime(from.toISOString())));
    s.appendChild(svg('text', { x: W, y: H - 6, 'text-anchor': 'end' }, fmtTime(to.toISOString())));
    counts.forEach(function (c, i) {
      if (!c) return;
      var h = (H - B - T) * c / max;
      var r = svg('rect', { class: 'bar', x: (L + 2 + i * bw).toFixed(2), y: (H - B - h).toFixed(2),
        width: Math.max(1, bw - 1).toFixed(2), height: h.toFixed(2), 'data-count': c });
      r.appendChild(svg('title', {}, fmtTime(new Date(from.getTime() + i * stepMs).toISOString()) + ': ' + c));
      s.appendChild(r);
    });
    var rows = points.slice().sort(function (a, b) { return new Date(a.time) - new Date(b.time); });
    return el('section', { class: 'chart', id: id },
      el('h2', { id: id + '-title', text: title }), s,
      el('table', { class: 'data' }, el('caption', { text: title + ' (table)' }),
        el('thead', null, el('tr', null, el('th', { scope: 'col', text: 'Step' }), el('th', { scope: 'col', class: 'num', text: 'Checks' }))),
        el('tbody', null, rows.length ? rows.map(function (p) {
          return el('tr', null, el('td', { text: fmtTime(p.time) }), el('td', { class: 'num', text: String(p.count) }));
        }) : el('tr', null, el('td', { colspan: 2, text: 'No checks in this range.' })))));
  }

  function groupChart(id, title, groups, total, errs) {
    var max = Math.max.apply(null, groups.map(function (g) { return g[1]; }).concat([1]));
    var row = 22, W = 460, L = 150, H = Math.max(1, groups.length) * row + 6;
    var s = svg('svg', { viewBox: '0 0 ' + W + ' ' + H, role: 'img', 'aria-labelledby': id + '-title' });
    groups.forEach(function (g, i) {
      var y = 3 + i * row, w = (W - L - 60) * g[1] / max;
      var label = g[0] === '' ? '(none)' : g[0];
      s.appendChild(svg('text', { x: L - 6, y: y + 14, 'text-anchor': 'end' }, label.length > 22 ? label.slice(0, 21) + '…' : label));
      var r = svg('rect', { class: 'bar' + (errs && g[0] !== 'allowed' ? ' err' : ''), x: L, y: y + 2, width: Math.max(1, w).toFixed(2), height: row - 6, 'data-count': g[1] });
      r.appendChild(svg('title', {}, label + ': ' + g[1]));
      s.appendChild(r);
      s.appendChild(svg('text', { x: L + w + 4, y: y + 14 }, g[1] + ' (' + pct(g[1], total) + ')'));
    });
    var what = id.replace('usage-', '');
    return el('section', { class: 'chart', id: id },
      el('h2', { id: id + '-title', text: title }), groups.length ? s : el('p', { text: 'No checks in this range.' }),
      el('table', { class: 'data' }, el('caption', { text: title + ' (table)' }),
        el('thead', null, el('tr', null, el('th', { scope: 'col', text: what.charAt(0).toUpperCase() + what.slice(1) }),
          el('th', { scope: 'col', class: 'num', text: 'Checks' }), el('th', { scope: 'col', class: 'num', text: 'Share' }))),
        el('tbody', null, groups.map(function (g) {
          return el('tr', { 'data-value': g[0] }, el('td', { text: g[0] === '' ? '(none)' : g[0] }),
            el('td', { class: 'num', text: String(g[1]) }), el('td', { class: 'num', text: pct(g[1], total) }));
        }))));
  }

  // ---- unused keys ----

  var unusedFor = '30d';

  function unusedPage() {
    view('Unused keys');
    main.appendChild(el('p', { text: 'Live keys nobody has used for this long (counting from their creation when never used): ' +
      'candidates to revoke.' }));
    var idle = el('input', { type: 'text', autocomplete: 'off', value: unusedFor, size: '8', placeholder: '30d' });
    main.appendChild(el('form', { id: 'unused-filter', class: 'card row', autocomplete: 'off', onsubmit: function (ev) {
      ev.preventDefault();
      unusedFor = idle.value.trim() || '30d';
      load();
    } }, field('unused-for', 'Unused for', idle, 'A duration such as 30d or 12h'),
    el('button', { type: 'submit', id: 'unused-apply', text: 'Show' })));
    var box = el('div', { id: 'unused-list' });
    main.appendChild(box);
    function load() {
      box.textContent = 'Loading…';
      return api('GET', '/api-keys?unused_for=' + encodeURIComponent(unusedFor)).then(function (keys) {
        box.textContent = '';
        box.appendChild(keyTable('unused', 'Keys unused for ' + unusedFor, keys, function (k) {
          return [
            el('a', { href: '#/usage/' + encodeURIComponent(k.id), 'aria-label': 'Usage of ' + k.name, text: 'Usage' }),
            el('button', { type: 'button', class: 'danger', 'data-action': 'revoke', 'aria-label': 'Revoke ' + k.name,
              text: 'Revoke', disabled: k.status === 'revoked', onclick: function () { revokeKey(k, load); } })
          ];
        }, me.admin));
      }).catch(function (e) {
        box.textContent = '';
        box.appendChild(el('p', { class: 'error', role: 'alert', text: 'Could not list unused keys: ' + errorText(e) }));
      });
    }
    load();
  }

  // ---- audit log ----

  var auditFilter = {};
  var auditEvents = ['key.created', 'key.rotated', 'key.revoked', 'key.scopes_changed', 'key.delivered',
    'key.expired_on_use', 'auth.failed', 'auth.spray_suspected', 'admin.call'];

  function auditPage() {
    view('Audit log');
    var f = auditFilter;
    var event = el('select', null, el('option', { value: '', text: 'Any' }),
      auditEvents.map(function (e) { return el('option', { value: e, text: e, selected: f.event === e }); }));
    var keyID = el('input', { type: 'text', autocomplete: 'off', value: f.key_id || '' });
    var owner = me.admin ? el('input', { type: 'text', autocomplete: 'off', value: f.owner || '' }) : null;
    var reason = el('input', { type: 'text', autocomplete: 'off', value: f.reason || '', placeholder: 'unknown_key' });
    var from = el('input', { type: 'datetime-local', value: f.fromLocal || '' });
    var to = el('input', { type: 'datetime-local', value: f.toLocal || '' });
    var limit = el('input', { type: 'number', min: '1', max: '1000', value: f.limit || '100' });
    var box = el('div', { id: 'audit-list' });
    var form = el('form', { id: 'audit-filter', class: 'card', autocomplete: 'off', onsubmit: function (ev) {
      ev.preventDefault();
      auditFilter = { event: event.value, key_id: keyID.value.trim(), owner: owner ? owner.value.trim() : '',
        reason: reason.value.trim(), fromLocal: from.value, toLocal: to.value, limit: limit.value };
      load();
    } },
    el('div', { class: 'row' },
      field('audit-event', 'Event', event), field('audit-key', 'Key id', keyID),
      owner ? field('audit-owner', 'Owner', owner) : null, field('audit-reason', 'Reason', reason)),
    el('div', { class: 'row' },
      field('audit-from', 'From (UTC)', from), field('audit-to', 'To (UTC)', to), field('audit-limit', 'Limit', limit),
      el('button', { type: 'submit', id: 'audit-apply', text: 'Apply filters' })));
    main.appendChild(form);
    main.appendChild(box);

    function load() {
      var f = auditFilter;
      var q = [];
      ['event', 'key_id', 'owner', 'reason'].forEach(function (k) { if (f[k]) q.push(k + '=' + encodeURIComponent(f[k])); });
      if (f.fromLocal) q.push('from=' + encodeURIComponent(rfc3339(new Date(f.fromLocal + ':00Z'))));
      if (f.toLocal) q.push('to=' + encodeURIComponent(rfc3339(new Date(f.toLocal + ':00Z'))));
      q.push('limit=' + encodeURIComponent(f.limit || '100'));
      box.textContent = 'Loading…';
      api('GET', '/audit?' + q.join('&')).then(function (res) {
        box.textContent = '';
        var evs = res.events || [];
        var head = ['Time', 'Event', 'Key', 'Owner', 'Actor', 'Reason', 'Status', 'Source', 'Details'];
        box.appendChild(el('table', { id: 'audit', class: 'cards' },
          el('caption', { text: evs.length + ' events, newest first' + (res.truncated ? ' (more match: narrow the filters)' : '') }),
          el('thead', null, el('tr', null, head.map(function (h) { return el('th', { scope: 'col', text: h }); }))),
          el('tbody', null, evs.length === 0 ? el('tr', null, el('td', { colspan: head.length, text: 'No events match.' })) :
            evs.map(function (e) {
              return el('tr', { 'data-event': e.event },
                cell('Time', fmtTime(e.time)), cell('Event', e.event, 'event'),
                cell('Key', [e.key_id || '—', e.key_hint ? ' ' : '', e.key_hint ? el('code', { text: e.key_hint }) : null], 'key'),
                cell('Owner', e.owner || '—'), cell('Actor', e.actor || '—'), cell('Reason', e.reason || '—', 'reason'),
                cell('Status', e.status ? String(e.status) : '—'), cell('Source', e.source || '—'),
                cell('Details', e.details ? JSON.stringify(e.details) : '—', 'details'));
            }))));
      }).catch(function (e) {
        box.textContent = '';
        box.appendChild(el('p', { class: 'error', role: 'alert', text: 'Could not read the audit log: ' + errorText(e) }));
      });
    }
    load();
  }

  // ---- start ----

  document.getElementById('logout').addEventListener('click', signOut);
  window.addEventListener('hashchange', route);
  fetch('/console/session', { credentials: 'same-origin', cache: 'no-store' }).then(function (r) {
    return r.ok ? r.json() : null;
  }).then(function (s) {
    me = s;
    showChrome();
    route();
  }).catch(function () { me = null; showChrome(); route(); });
})();
