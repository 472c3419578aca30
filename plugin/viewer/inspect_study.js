// Open one study in OHIF with headless Chromium (puppeteer-core), lay out image | SR | PDF with the
// viewer's own commands, measure what is on screen and save a screenshot.
//
// Usage: node inspect_study.js '<json>' where json has
//   chromium, url (the /viewer?StudyInstanceUIDs=... URL), modalities (e.g. ["CR", "SR", "DOC"]),
//   texts (strings that must be visible in full), screenshot (PNG path), width, height, scale,
//   timeout_ms, settle_ms.
// Prints one JSON object on stdout: viewports (modality, rect), texts (text, found, rects, inside),
// canvases, pdf (rect), external_requests (URLs of hosts other than the viewer's), console_errors.
"use strict";
const puppeteer = require("puppeteer-core");

const args = JSON.parse(process.argv[2]);

async function main() {
  const browser = await puppeteer.launch({
    executablePath: args.chromium,
    headless: true,
    args: ["--no-sandbox", "--enable-unsafe-swiftshader", "--no-first-run", "--disable-extensions"],
  });
  const result = { external_requests: [], console_errors: [], http_errors: [] };
  try {
    const page = await browser.newPage();
    await page.setViewport({ width: args.width, height: args.height, deviceScaleFactor: args.scale });
    const origin = new URL(args.url).origin;
    await page.setRequestInterception(true);
    page.on("request", (req) => {
      const url = req.url();
      // chrome:// and chrome-extension:// are the browser's own PDF viewer, not the network.
      const internal = /^(data|blob|chrome|chrome-extension):/.test(url);
      if (url.startsWith(origin) || internal) {
        req.continue();
      } else {
        result.external_requests.push(url.slice(0, 200));
        req.abort();
      }
    });
    page.on("response", (resp) => {
      if (resp.status() >= 400) result.http_errors.push(`${resp.status()} ${resp.url().slice(0, 200)}`);
    });
    page.on("requestfailed", (req) => {
      const failure = req.failure();
      result.http_errors.push(`failed ${failure ? failure.errorText : ""} ${req.url().slice(0, 200)}`);
    });
    page.on("pageerror", (err) => result.console_errors.push(String(err).slice(0, 300)));
    page.on("console", (msg) => {
      if (msg.type() === "error" || msg.type() === "warn") result.console_errors.push(msg.text().slice(0, 300));
    });
    await page.goto(args.url, { waitUntil: "domcontentloaded", timeout: args.timeout_ms });
    await page.waitForFunction(
      (mods) => {
        const s = window.services;
        if (!s || !s.displaySetService || !window.commandsManager) return false;
        const have = s.displaySetService.getActiveDisplaySets().map((d) => d.Modality);
        return mods.every((m) => have.includes(m));
      },
      { timeout: args.timeout_ms, polling: 250 },
      args.modalities,
    );
    // What a user does: choose a 1 x N layout, then double-click one thumbnail per viewport.
    await page.evaluate((n) => {
      window.commandsManager.runCommand("setViewportGridLayout", { numRows: 1, numCols: n });
    }, args.modalities.length);
    await page.waitForFunction(
      (n) => window.services.viewportGridService.getState().viewports.size === n,
      { timeout: args.timeout_ms, polling: 100 },
      args.modalities.length,
    );
    await page.evaluate((mods) => {
      const { displaySetService, viewportGridService } = window.services;
      const sets = displaySetService.getActiveDisplaySets();
      const ids = [...viewportGridService.getState().viewports.keys()];
      // The first series of each modality (lowest SeriesNumber: the frontal view of a CR/DX study).
      const first = (m) =>
        sets
          .filter((d) => d.Modality === m)
          .sort((a, b) => (Number(a.SeriesNumber) || 0) - (Number(b.SeriesNumber) || 0))[0];
      const updates = mods.map((m, i) => ({
        viewportId: ids[i],
        displaySetInstanceUIDs: [first(m).displaySetInstanceUID],
      }));
      viewportGridService.setDisplaySetsForViewports(updates);
    }, args.modalities);
    // Wait until every expected text is in the DOM, an image canvas exists and the PDF object is there.
    await page.waitForFunction(
      (texts, wantPdf) => {
        const body = document.body.innerText.replace(/\s+/g, " ");
        const textsIn = texts.every((t) => body.includes(t.replace(/\s+/g, " ")));
        const canvas = [...document.querySelectorAll("canvas")].some((c) => c.width > 100 && c.height > 100);
        const pdf = !wantPdf || document.querySelector('object[type="application/pdf"]') !== null;
        return textsIn && canvas && pdf;
      },
      { timeout: args.timeout_ms, polling: 250 },
      args.texts,
      args.modalities.includes("DOC"),
    );
    const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
    // Chromium's PDF plug-in paints seconds after the <object> appears: wait until its pixels are not
    // a plain grey (a PNG of a painted page is far larger than one of an empty panel).
    if (args.modalities.includes("DOC")) {
      const deadline = Date.now() + args.timeout_ms;
      for (;;) {
        const clip = await page.evaluate(() => {
          const r = document.querySelector('object[type="application/pdf"]').getBoundingClientRect();
          return { x: r.x, y: r.y, width: r.width, height: r.height };
        });
        const png = await page.screenshot({ clip });
        result.pdf_png_bytes = png.length;
        if (png.length > args.pdf_min_png_bytes || Date.now() > deadline) break;
        await sleep(500);
      }
    }
    await sleep(args.settle_ms); // image decode and paint
    Object.assign(
      result,
      await page.evaluate((mods, texts) => {
        const box = (el) => {
          const r = el.getBoundingClientRect();
          return { x: r.x, y: r.y, width: r.width, height: r.height };
        };
        const { viewportGridService, displaySetService } = window.services;
        // The grid's panes are in the order of the layout's viewports (1 x N: left to right).
        const panes = [...document.querySelectorAll('[data-cy="viewport-pane"]')];
        const paneOf = (el) => {
          const pane = el && el.closest('[data-cy="viewport-pane"]');
          return pane ? String(panes.indexOf(pane)) : null;
        };
        const viewports = [...viewportGridService.getState().viewports.values()].map((vp, i) => {
          const ds = displaySetService.getDisplaySetByUID(vp.displaySetInstanceUIDs[0]);
          return { id: String(i), modality: ds ? ds.Modality : null, rect: panes[i] ? box(panes[i]) : null };
        });
        // Every text node run that makes up each expected text, with its on-screen rectangles.
        const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
        const nodes = [];
        while (walker.nextNode()) nodes.push(walker.currentNode);
        const norm = (s) => s.replace(/\s+/g, " ").trim();
        const found = texts.map((text) => {
          const want = norm(text);
          for (const node of nodes) {
            const have = node.textContent;
            const flat = have.replace(/\s/g, " ");
            // map the normalised text back to a range of the raw text node
            const words = want.split(" ");
            let start = flat.indexOf(words[0]);
            while (start >= 0) {
              let i = start;
              let ok = true;
              for (const w of words) {
                while (i < flat.length && flat[i] === " ") i++;
                if (flat.substr(i, w.length) !== w) {
                  ok = false;
                  break;
                }
                i += w.length;
              }
              if (ok) {
                const range = document.createRange();
                range.setStart(node, start);
                range.setEnd(node, i);
                const rects = [...range.getClientRects()]
                  .filter((r) => r.width > 0)
                  .map((r) => ({ x: r.x, y: r.y, width: r.width, height: r.height }));
                return { text, found: true, rects, viewport: paneOf(node.parentElement) };
              }
              start = flat.indexOf(words[0], start + 1);
            }
          }
          return { text, found: false, rects: [], viewport: null };
        });
        const canvases = [...document.querySelectorAll("canvas")]
          .filter((c) => c.width > 100 && c.height > 100)
          .map((c) => ({ rect: box(c), viewport: paneOf(c) }));
        const pdfEl = document.querySelector('object[type="application/pdf"]');
        return {
          viewports,
          texts: found,
          canvases,
          pdf: pdfEl ? { rect: box(pdfEl), data: (pdfEl.getAttribute("data") || "").slice(0, 5) } : null,
          window: { width: window.innerWidth, height: window.innerHeight },
        };
      }, args.modalities, args.texts),
    );
    await page.screenshot({ path: args.screenshot, fullPage: false });
  } finally {
    await browser.close();
  }
  process.stdout.write(JSON.stringify(result));
}

main().catch((err) => {
  process.stderr.write(String(err && err.stack ? err.stack : err) + "\n");
  process.exit(1);
});
