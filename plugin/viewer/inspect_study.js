// Open one study in OHIF with headless Chromium (puppeteer-core), lay out image | SR | PDF with the
// viewer's own commands, measure what is on screen and save a screenshot.
//
// Usage: node inspect_study.js '<json>' where json has
//   chromium, url (the /viewer?StudyInstanceUIDs=... URL), modalities (e.g. ["CR", "SR", "DOC"]),
//   texts (strings that must be visible in full), screenshot (PNG path), width, height, scale,
//   timeout_ms, settle_ms, paint (limits of measurePixels and min_image_std), paint_wait_ms
//   (how long one load of the page may take to draw), attempts (loads of the page at most).
// Prints one JSON object on stdout: viewports (modality, rect), texts (text, found, rects, inside),
// canvases, pdf (rect), external_requests (URLs of hosts other than the viewer's), console_errors.
"use strict";
const puppeteer = require("puppeteer-core");

const args = JSON.parse(process.argv[2]);

// Runs in the page: grey-level statistics of a screenshot (base64 PNG): std (of all pixels) and how
// much of it is a painted PDF page. A page row is a row whose pixels are mostly near-white; the page
// is the box of those rows and of the mostly near-white columns within them; ink is the share of dark
// pixels inside that box.
async function measurePixels(b64, limits) {
  const img = new Image();
  img.src = `data:image/png;base64,${b64}`;
  await img.decode();
  const w = img.naturalWidth;
  const h = img.naturalHeight;
  const canvas = document.createElement("canvas");
  canvas.width = w;
  canvas.height = h;
  const ctx = canvas.getContext("2d");
  ctx.drawImage(img, 0, 0);
  const px = ctx.getImageData(0, 0, w, h).data;
  const grey = (x, y) => {
    const i = (y * w + x) * 4;
    return (px[i] + px[i + 1] + px[i + 2]) / 3;
  };
  let sum = 0;
  let sum2 = 0;
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const g = grey(x, y);
      sum += g;
      sum2 += g * g;
    }
  }
  const mean = sum / Math.max(w * h, 1);
  const std = Math.sqrt(Math.max(sum2 / Math.max(w * h, 1) - mean * mean, 0));
  const rows = [];
  for (let y = 0; y < h; y++) {
    let white = 0;
    for (let x = 0; x < w; x++) if (grey(x, y) >= limits.white) white++;
    if (white >= 0.5 * w) rows.push(y);
  }
  if (rows.length < limits.min_page_rows * limits.scale) {
    return { std, painted: false, page_rows: rows.length, ink: 0 };
  }
  const y0 = rows[0];
  const y1 = rows[rows.length - 1];
  let x0 = w;
  let x1 = -1;
  for (let x = 0; x < w; x++) {
    let white = 0;
    for (const y of rows) if (grey(x, y) >= limits.white) white++;
    if (white >= 0.5 * rows.length) {
      x0 = Math.min(x0, x);
      x1 = Math.max(x1, x);
    }
  }
  let dark = 0;
  for (let y = y0; y <= y1; y++) for (let x = x0; x <= x1; x++) if (grey(x, y) < limits.ink) dark++;
  const area = Math.max((y1 - y0 + 1) * (x1 - x0 + 1), 1);
  const ink = dark / area;
  return { std, painted: ink >= limits.min_ink, page_rows: rows.length, ink };
}

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
    // OHIF's viewports load their images over DICOMweb; a viewport replaced while its load is in
    // flight ("The stack viewport has been destroyed") can leave its successor blank for good.
    // So each step of the layout waits until the network has been quiet for a moment.
    const quiet = () => page.waitForNetworkIdle({ idleTime: 750, timeout: args.timeout_ms }).catch(() => {});
    // Open the study and lay it out (again after a reload).
    const openStudy = async () => {
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
      await quiet();
      // What a user does: choose a 1 x N layout, then double-click one thumbnail per viewport.
      await page.evaluate((n) => {
        window.commandsManager.runCommand("setViewportGridLayout", { numRows: 1, numCols: n });
      }, args.modalities.length);
      await page.waitForFunction(
        (n) => window.services.viewportGridService.getState().viewports.size === n,
        { timeout: args.timeout_ms, polling: 100 },
        args.modalities.length,
      );
      await quiet();
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
    };
    const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
    // Chromium's PDF plug-in paints seconds after the <object> appears, first its grey panel and
    // toolbar, then the page, then the page's text; the image viewport draws once its pixels are
    // decoded. Wait until the PDF viewport shows a white page with text on it, the amount of text is
    // the same on two looks 500 ms apart, and the middle of the image viewport is not blank.
    const clipOf = (selector, index, part) =>
      page.evaluate(
        (sel, i, f) => {
          const el = document.querySelectorAll(sel)[i];
          if (!el) return null;
          const r = el.getBoundingClientRect();
          const dx = (r.width * (1 - f)) / 2;
          const dy = (r.height * (1 - f)) / 2;
          return { x: r.x + dx, y: r.y + dy, width: r.width * f, height: r.height * f };
        },
        selector,
        index,
        part,
      );
    // captureBeyondViewport false: puppeteer's default for a clip (true) resizes the page's surface
    // for the capture, OHIF's viewports see a resize, clear their canvases and redraw, and the look
    // itself finds them blank.
    const look = async (clip) => {
      const png = await page.screenshot({ clip, encoding: "base64", captureBeyondViewport: false });
      return page.evaluate(measurePixels, png, args.paint);
    };
    // Image viewports: the radiograph (CR / DX) and the attention-map Secondary Capture (OT).
    const imageIndices = args.modalities
      .map((m, i) => (["CR", "DX", "OT"].includes(m) ? i : -1))
      .filter((i) => i >= 0);
    const wantPdf = args.modalities.includes("DOC");
    const drawn = async (waitMs) => {
      const deadline = Date.now() + waitMs;
      let last = null;
      for (;;) {
        let imageDrawn = true;
        for (const index of imageIndices) {
          const clip = await clipOf('[data-cy="viewport-pane"]', index, 0.5);
          const image = clip ? await look(clip) : { std: 0 };
          if (index === imageIndices[0] || image.std < result.image_paint.std) result.image_paint = { std: image.std };
          imageDrawn = imageDrawn && image.std >= args.paint.min_image_std;
          result.paint_log.push([result.attempts, index, Math.round(image.std * 10) / 10]);
        }
        let pdfDone = true;
        if (wantPdf) {
          const paint = await look(await clipOf('object[type="application/pdf"]', 0, 1));
          result.pdf_paint = { painted: paint.painted, page_rows: paint.page_rows, ink: paint.ink };
          pdfDone = last !== null && paint.painted && Math.abs(paint.ink - last.ink) <= 0.02 * last.ink;
          last = paint.painted ? paint : null;
        }
        if (imageDrawn && pdfDone) return true;
        if (Date.now() > deadline) return false;
        await sleep(500);
      }
    };
    // A viewport that stays blank (a WebGL draw that never happened, a PDF plug-in that never painted)
    // gets what a user gives it: the page reloaded, up to `attempts` times in all.
    result.attempts = 0;
    result.paint_log = []; // [load, viewport index, grey-level std of its middle] per look
    for (;;) {
      result.attempts += 1;
      await openStudy();
      if ((await drawn(args.paint_wait_ms)) || result.attempts >= args.attempts) break;
    }
    await sleep(args.settle_ms); // let the last paint reach the screen
    Object.assign(
      result,
      await page.evaluate(
        (mods, texts) => {
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
            return {
              id: String(i),
              modality: ds ? ds.Modality : null,
              rect: panes[i] ? box(panes[i]) : null,
            };
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
        },
        args.modalities,
        args.texts,
      ),
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
