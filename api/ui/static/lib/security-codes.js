// The new codes of one sheet retrieval: shown, copied, downloaded and printed from
// memory, never stored (no localStorage, sessionStorage, URL or console), and dropped
// from memory and the page by wipe(), which the page calls on pagehide.

let sheet = null; // {setId, generatedAt, codes: string[], filename, pdfBase64}

const $ = (id) => document.getElementById(id);

export function hasCodes() {
  return sheet !== null;
}

// Shows the codes of a retrieved sheet (the JSON form of GET …/sheet).
export function showCodes(body, { first = false, formatTime = (t) => t } = {}) {
  sheet = {
    setId: body.set_id,
    generatedAt: body.generated_at,
    codes: body.codes.slice(),
    filename: body.filename,
    pdfBase64: body.pdf,
  };
  $("new-codes-title").textContent = first ? "Your backup codes" : "Your new backup codes";
  $("new-set").textContent = sheet.setId;
  const time = $("new-generated");
  time.dateTime = sheet.generatedAt;
  time.textContent = formatTime(sheet.generatedAt);
  const list = $("new-codes-list");
  list.replaceChildren(
    ...sheet.codes.map((code) => {
      const item = document.createElement("li");
      const text = document.createElement("code");
      text.textContent = code;
      item.append(text);
      return item;
    }),
  );
  note("");
  document.documentElement.classList.add("sec-codes-shown");
  $("new-codes").hidden = false;
}

// Forgets the codes: memory, the list, the note; safe to call at any time.
export function wipe() {
  if (sheet !== null) {
    sheet.codes.fill("");
    sheet = null;
  }
  const list = $("new-codes-list");
  if (list) list.replaceChildren();
  const set = $("new-set");
  if (set) set.textContent = "";
  document.documentElement.classList.remove("sec-codes-shown");
  const panel = $("new-codes");
  if (panel) panel.hidden = true;
  note("");
}

function note(text) {
  const p = $("codes-action-note");
  if (!p) return;
  p.textContent = text;
  p.hidden = text === "";
}

// Copy: the codes one a line, as the text form of the sheet has them.
export async function copyCodes() {
  if (sheet === null) return "";
  try {
    await navigator.clipboard.writeText(sheet.codes.join("\n") + "\n");
  } catch {
    const text = "Your browser did not allow copying. Select the codes above and copy them, or download the PDF.";
    note(text);
    return text;
  }
  const text = `${sheet.codes.length} codes copied. Paste them into your password manager, then clear your clipboard.`;
  note(text);
  return text;
}

// Download: the PDF of the same retrieval, under the file name the contract gives it.
export function downloadPdf() {
  if (sheet === null) return "";
  const raw = atob(sheet.pdfBase64);
  const bytes = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i += 1) bytes[i] = raw.charCodeAt(i);
  const url = URL.createObjectURL(new Blob([bytes], { type: "application/pdf" }));
  const link = document.createElement("a");
  link.href = url;
  link.download = sheet.filename;
  link.hidden = true;
  document.body.append(link);
  link.click();
  link.remove();
  // The browser has taken the download once the click's task is done.
  setTimeout(() => URL.revokeObjectURL(url), 0);
  const text = `Downloading ${sheet.filename}. Print it or keep it offline, then delete the file.`;
  note(text);
  return text;
}

// Print: the print stylesheet shows only the codes while html.sec-codes-shown is set.
export function printCodes() {
  if (sheet === null) return "";
  window.print();
  return "Print dialog opened.";
}
