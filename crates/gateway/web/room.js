// ComfyUME's participant panel: a frontend extension the gateway serves
// (listed in /extensions like a custom node pack's, so the frontend itself
// is not modified). It shows who is logged in with a way to log out, the
// instructor's broadcast, a notice while the room is paused, and where
// each of the participant's waiting prompts stands in the room's queue
// with an estimated start, and a "Share to wall" button for their latest
// output image. It reads GET /api/comfyume/room when the page
// loads or its socket reconnects, then follows the gateway's
// `comfyume.room` frames. Text only ever goes in through textContent.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const STYLE = `
#comfyume-room { position: fixed; left: 50%; top: 52px; transform: translateX(-50%);
  z-index: 2000; display: flex; flex-direction: column; gap: 6px; align-items: center;
  pointer-events: none; font: 14px/1.4 system-ui, sans-serif; max-width: 90vw; }
#comfyume-room > div { pointer-events: auto; padding: 6px 14px; border-radius: 8px;
  box-shadow: 0 2px 8px rgba(0,0,0,.35); }
#comfyume-room .banner { background: #fde68a; color: #1c1917; font-weight: 600; }
#comfyume-room .paused { background: #fecaca; color: #450a0a; }
#comfyume-room .gpus { background: #fed7aa; color: #431407; }
#comfyume-room .queue { background: #1e293b; color: #e2e8f0; }
#comfyume-room .share { background: #1e293b; color: #e2e8f0; display: flex; gap: 10px; align-items: center; }
#comfyume-room .share button { background: #0369a1; color: #fff; border: 0; border-radius: 6px; padding: 3px 10px; cursor: pointer; }
#comfyume-user { position: fixed; left: 50%; bottom: 12px; transform: translateX(-50%); z-index: 2000;
  background: #1e293b; color: #e2e8f0; padding: 4px 10px; border-radius: 8px;
  font: 13px system-ui, sans-serif; box-shadow: 0 2px 8px rgba(0,0,0,.35); }
#comfyume-user a { color: #93c5fd; margin-left: 8px; }
`;

function line(cls, text) {
  const div = document.createElement("div");
  div.className = cls;
  div.textContent = text;
  return div;
}

function about(seconds) {
  if (seconds == null) return "";
  if (seconds < 60) return ` · starts in about ${Math.max(seconds, 1)} s`;
  return ` · starts in about ${Math.round(seconds / 60)} min`;
}

// The latest output image of this participant's, to share, and what
// became of sharing it.
let latestOutput = null;
let shareNote = "";

function shareLine(onShare) {
  const div = document.createElement("div");
  div.className = "share";
  const label = document.createElement("span");
  label.textContent = shareNote || `Your latest output: ${latestOutput.filename}`;
  div.append(label);
  if (!shareNote) {
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = "Share to wall";
    button.addEventListener("click", onShare);
    div.append(button);
  }
  return div;
}

function render(panel, badge, standing) {
  const lines = [];
  if (standing.banner && standing.banner.message) {
    lines.push(line("banner", `From the instructor: ${standing.banner.message}`));
  }
  if (standing.paused) {
    lines.push(line("paused",
      "Room paused by the instructor: prompts already running finish; yours wait until it resumes."));
  }
  const waiting = standing.waiting || [];
  if (waiting.length > 0 && standing.gpus === "warming up") {
    lines.push(line("gpus", "The GPUs are warming up: your prompt starts as soon as one is ready."));
  } else if (waiting.length > 0 && standing.gpus === "unavailable") {
    lines.push(line("gpus", "No GPU can take work right now: your prompt waits in the queue."));
  }
  if (waiting.some((w) => w.retrying)) {
    lines.push(line("queue", "A GPU failed your prompt: it runs again on another."));
  }
  if (waiting.length > 0) {
    const first = waiting[0];
    const ahead = first.ahead === 0 ? "next to start" : `${first.ahead} ahead of it`;
    let text = `Your prompt is #${first.position} in the room's queue (${ahead})${about(first.estimated_start_seconds)}`;
    if (waiting.length > 1) text += ` · and ${waiting.length - 1} more of yours after it`;
    lines.push(line("queue", text));
  }
  if (latestOutput) lines.push(shareLine(panel.onShare));
  panel.replaceChildren(...lines);
  panel.dataset.paused = standing.paused ? "true" : "false";
  if (standing.user) {
    const name = document.createElement("span");
    name.textContent = standing.user;
    const takeHome = document.createElement("a");
    takeHome.href = "/api/comfyume/export.zip";
    takeHome.download = `comfyume-${standing.user}.zip`;
    takeHome.textContent = "Download my work";
    takeHome.title = "Your workflows and outputs, as a zip to take home";
    const out = document.createElement("a");
    out.href = "/logout";
    out.textContent = "Log out";
    badge.replaceChildren(name, takeHome, out);
  }
}

app.registerExtension({
  name: "comfyume.room",
  async setup() {
    const style = document.createElement("style");
    style.textContent = STYLE;
    document.head.append(style);
    const panel = document.createElement("div");
    panel.id = "comfyume-room";
    const badge = document.createElement("div");
    badge.id = "comfyume-user";
    document.body.append(panel, badge);

    let latest = null;
    const show = (standing) => {
      // The user name comes with the page's first look; frames keep it.
      latest = { ...latest, ...standing };
      render(panel, badge, latest);
    };
    const look = async () => {
      try {
        const r = await api.fetchApi("/comfyume/room");
        if (r.ok) show(await r.json());
      } catch (e) {
        console.warn("ComfyUME: could not read the room's state", e);
      }
    };
    panel.onShare = async () => {
      const r = await api.fetchApi("/comfyume/wall", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(latestOutput),
      });
      const answer = await r.json().catch(() => ({}));
      shareNote = r.ok ? `${latestOutput.filename} is on the wall` : `Not shared: ${answer.error || r.status}`;
      render(panel, badge, latest || {});
    };
    api.addEventListener("executed", (e) => {
      const images = (e.detail && e.detail.output && e.detail.output.images) || [];
      const saved = images.filter((i) => i.type === "output");
      if (!saved.length) return;
      const last = saved[saved.length - 1];
      latestOutput = { filename: last.filename, subfolder: last.subfolder || "", type: "output" };
      shareNote = "";
      render(panel, badge, latest || {});
    });
    api.addEventListener("comfyume.room", (e) => show(e.detail));
    api.addEventListener("reconnected", look);
    await look();
  },
});
