// frieren-stream browser client: camera -> server (WebRTC) -> generated audio back.
// No build step; plain ES2017 for current Chromium and Firefox.
// URL parameters: ?token=...  (needed when the server listens beyond localhost)
//                 ?autostart=1 (start at once with the default camera; used by tests)
"use strict";

(function () {
  const params = new URLSearchParams(location.search);
  const token = params.get("token") || "";
  const $ = (id) => document.getElementById(id);
  const ui = {
    camera: $("camera"), start: $("start"), stop: $("stop"), status: $("status"),
    preview: $("preview"), remote: $("remote"), level: $("level"),
  };

  const st = {
    pc: null, dc: null, stream: null, audioCtx: null, analyser: null, timers: [],
    session: null, statsUpdates: 0, lastStats: null, rms: 0, peak: 0, maxRms: 0,
    rttMs: null, jitterMs: null, pingRttMs: null, framesSent: null, audioSamples: 0,
    // ms since page load (performance.now()): ICE+DTLS connected, AudioContext running, the
    // audio track arrived, the analyser first measured non-silent generated audio (rms > 1e-3).
    connectedMs: null, audioRunningMs: null, firstTrackMs: null, firstAudioMs: null,
  };

  function setStatus(text, isError) {
    ui.status.textContent = text;
    ui.status.className = isError ? "error" : "";
  }

  function authHeaders(extra) {
    const h = Object.assign({}, extra || {});
    if (token) h["Authorization"] = "Bearer " + token;
    return h;
  }

  async function api(path, options) {
    const opts = Object.assign({}, options || {});
    opts.headers = authHeaders(opts.headers);
    const res = await fetch(path, opts);
    let body = null;
    try { body = await res.json(); } catch (e) { body = null; }
    if (!res.ok) {
      const msg = body && body.error ? body.error : res.status + " " + res.statusText;
      throw new Error(msg);
    }
    return body;
  }

  async function listCameras() {
    if (!navigator.mediaDevices || !navigator.mediaDevices.enumerateDevices) return;
    const devices = await navigator.mediaDevices.enumerateDevices();
    const keep = ui.camera.value;
    ui.camera.innerHTML = "";
    const def = document.createElement("option");
    def.value = ""; def.textContent = "default camera";
    ui.camera.appendChild(def);
    devices.filter((d) => d.kind === "videoinput").forEach((d, i) => {
      const o = document.createElement("option");
      o.value = d.deviceId;
      o.textContent = d.label || ("camera " + (i + 1));
      ui.camera.appendChild(o);
    });
    ui.camera.value = keep;
  }

  function waitForIceGathering(pc, timeoutMs) {
    // The server answers the complete offer (no trickle): wait for candidates, bounded.
    if (pc.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => { pc.removeEventListener("icegatheringstatechange", check); resolve(); };
      const check = () => { if (pc.iceGatheringState === "complete") done(); };
      pc.addEventListener("icegatheringstatechange", check);
      setTimeout(done, timeoutMs);
    });
  }

  function fmtMs(v) { return (v === null || v === undefined) ? "\u2013" : Math.round(v) + " ms"; }

  function showStats(s) {
    st.lastStats = s;
    st.statsUpdates += 1;
    $("s-server-latency").textContent = fmtMs(s.egress_latency_p50_ms) + " / " + fmtMs(s.egress_latency_p95_ms);
    $("s-rtf").textContent = (s.rtf === null || s.rtf === undefined) ? "\u2013" : s.rtf.toFixed(2);
    $("s-hop").textContent = fmtMs(s.hop_ms);
    $("s-fps").textContent = s.input_fps ? s.input_fps.toFixed(1) + " fps" : "\u2013";
    $("s-dropped").textContent = String(s.dropped);
    $("s-frames-dropped").textContent = String(s.frames_dropped === undefined ? "\u2013" : s.frames_dropped);
    $("s-underruns").textContent = String(s.underruns);
    $("s-buffer").textContent = fmtMs(s.buffer_ms);
    $("s-target").textContent = (s.jitter_mode === "fixed") ? "fixed prebuffer"
      : fmtMs(s.target_delay_ms) + " (trimmed " + fmtMs(s.skipped_ms) + ")";
    $("s-chunks").textContent = String(s.chunks);
    $("s-updates").textContent = String(st.statsUpdates);
    const rtt = st.rttMs !== null ? st.rttMs : st.pingRttMs;
    $("s-rtt").textContent = fmtMs(rtt);
    $("s-jitter").textContent = fmtMs(st.jitterMs);
    if (s.egress_latency_p50_ms !== null && s.egress_latency_p50_ms !== undefined) {
      // frame arrival -> audio sent (server) + video uplink and audio downlink (~1 RTT)
      // + the browser's jitter buffer; camera capture/encode time is not included.
      const total = s.egress_latency_p50_ms + (rtt || 0) + (st.jitterMs || 0);
      $("s-latency").textContent = "\u2248 " + fmtMs(total);
    }
  }

  function onMessage(ev) {
    let msg;
    try { msg = JSON.parse(ev.data); } catch (e) { return; }
    if (msg.type === "stats") showStats(msg);
    else if (msg.type === "pong" && typeof msg.t === "number") st.pingRttMs = performance.now() - msg.t;
  }

  function send(obj) {
    if (st.dc && st.dc.readyState === "open") st.dc.send(JSON.stringify(obj));
  }

  function setupAnalyser(stream) {
    // Chromium only feeds remote WebRTC audio into WebAudio while a media element plays it too.
    ui.remote.srcObject = stream;
    const p = ui.remote.play();
    if (p && p.catch) p.catch(() => setStatus("press play on the audio player to hear the audio"));
    const Ctx = window.AudioContext || window.webkitAudioContext;
    if (!Ctx) return;
    if (!st.audioCtx) st.audioCtx = new Ctx();
    if (st.audioCtx.state === "suspended") st.audioCtx.resume().catch(() => {});
    const src = st.audioCtx.createMediaStreamSource(stream);
    st.analyser = st.audioCtx.createAnalyser();
    st.analyser.fftSize = 2048;
    src.connect(st.analyser);
    const buf = new Float32Array(st.analyser.fftSize);
    st.timers.push(setInterval(() => {
      if (!st.analyser) return;
      st.analyser.getFloatTimeDomainData(buf);
      let sum = 0, peak = 0;
      for (let i = 0; i < buf.length; i++) { const v = buf[i]; sum += v * v; if (Math.abs(v) > peak) peak = Math.abs(v); }
      st.rms = Math.sqrt(sum / buf.length);
      st.peak = peak;
      st.maxRms = Math.max(st.maxRms, st.rms);
      if (st.firstAudioMs === null && st.rms > 1e-3) st.firstAudioMs = performance.now();
      ui.level.value = st.rms;
    }, 100));
  }

  async function pollRtcStats() {
    if (!st.pc) return;
    try {
      const report = await st.pc.getStats();
      report.forEach((r) => {
        if (r.type === "candidate-pair" && r.nominated && typeof r.currentRoundTripTime === "number") {
          st.rttMs = r.currentRoundTripTime * 1000;
        }
        if (r.type === "inbound-rtp" && r.kind === "audio" && r.jitterBufferEmittedCount) {
          st.jitterMs = 1000 * r.jitterBufferDelay / r.jitterBufferEmittedCount;
          st.audioSamples = r.totalSamplesReceived || st.audioSamples;
        }
        if (r.type === "outbound-rtp" && r.kind === "video") st.framesSent = r.framesSent || r.framesEncoded || null;
      });
    } catch (e) { /* the connection is closing */ }
  }

  function report() {
    send({
      type: "report", rms: st.rms, peak: st.peak, max_rms: st.maxRms, stats_updates: st.statsUpdates,
      last_stats_seq: st.lastStats ? st.lastStats.seq : null, rtt_ms: st.rttMs, ping_rtt_ms: st.pingRttMs,
      jitter_buffer_ms: st.jitterMs, frames_sent: st.framesSent, audio_samples_received: st.audioSamples,
      audio_context: st.audioCtx ? st.audioCtx.state : null, user_agent: navigator.userAgent.slice(0, 100),
      connected_ms: st.connectedMs, audio_running_ms: st.audioRunningMs, track_ms: st.firstTrackMs,
      first_audio_ms: st.firstAudioMs,
    });
    send({ type: "ping", t: performance.now() });
  }

  async function start() {
    if (st.pc) return;
    ui.start.disabled = true;
    try {
      setStatus("asking for the camera\u2026");
      const cfg = await api("config");
      const deviceId = ui.camera.value;
      st.stream = await navigator.mediaDevices.getUserMedia({
        video: deviceId ? { deviceId: { exact: deviceId } } : true, audio: false,
      });
      ui.preview.srcObject = st.stream;
      listCameras().catch(() => {});
      // Create the AudioContext inside the click (user gesture) so playback may start.
      const Ctx = window.AudioContext || window.webkitAudioContext;
      if (Ctx && !st.audioCtx) {
        const ctx = new Ctx();
        st.audioCtx = ctx;
        const mark = () => { if (ctx.state === "running" && st.audioRunningMs === null) st.audioRunningMs = performance.now(); };
        ctx.addEventListener("statechange", mark);
        mark();
      }

      const pc = new RTCPeerConnection({ iceServers: cfg.iceServers || [] });
      st.pc = pc;
      st.dc = pc.createDataChannel("stats");
      st.dc.onmessage = onMessage;
      pc.addTransceiver("audio", { direction: "recvonly" });
      st.stream.getVideoTracks().forEach((t) => pc.addTrack(t, st.stream));
      pc.ontrack = (ev) => {
        if (ev.track.kind === "audio" && st.firstTrackMs === null) st.firstTrackMs = performance.now();
        if (ev.track.kind === "audio") setupAnalyser(ev.streams && ev.streams[0] ? ev.streams[0] : new MediaStream([ev.track]));
      };
      pc.onconnectionstatechange = () => {
        const s = pc.connectionState;
        if (s === "connected" && st.connectedMs === null) st.connectedMs = performance.now();
        if (s === "failed") { setStatus("connection failed: the server could not be reached over ICE (check STUN/TURN settings and firewalls)", true); stop(false); }
        else if (s === "disconnected" || s === "closed") setStatus("connection " + s);
        else setStatus(s === "connected" ? "streaming (session " + st.session + ")" : "connection " + s);
      };
      setStatus("connecting\u2026");
      await pc.setLocalDescription(await pc.createOffer());
      await waitForIceGathering(pc, 3000);
      const answer = await api("offer", {
        method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ sdp: pc.localDescription.sdp, type: pc.localDescription.type }),
      });
      st.session = answer.session;
      await pc.setRemoteDescription({ sdp: answer.sdp, type: answer.type });
      st.timers.push(setInterval(report, 500));
      st.timers.push(setInterval(pollRtcStats, 1000));
      ui.stop.disabled = false;
    } catch (e) {
      setStatus("could not start: " + (e && e.message ? e.message : e), true);
      stop(false);
    }
  }

  function stop(sayBye) {
    if (sayBye !== false) send({ type: "bye" });
    st.timers.forEach((t) => clearInterval(t));
    st.timers = [];
    const pc = st.pc;
    st.pc = null; st.analyser = null;
    // Give the "bye" a moment to leave before closing the transport.
    if (pc) setTimeout(() => pc.close(), sayBye !== false ? 100 : 0);
    st.dc = null;
    if (st.stream) st.stream.getTracks().forEach((t) => t.stop());
    st.stream = null;
    ui.preview.srcObject = null;
    ui.remote.srcObject = null;
    ui.level.value = 0;
    ui.start.disabled = false;
    ui.stop.disabled = true;
    if (sayBye !== false) setStatus("stopped");
  }

  ui.start.addEventListener("click", () => { start(); });
  ui.stop.addEventListener("click", () => { stop(true); });
  window.addEventListener("pagehide", () => { if (st.pc) stop(true); });
  // Without a user gesture (e.g. ?autostart=1) browsers may keep the AudioContext suspended
  // (Firefox: media.autoplay.block-webaudio); resume it on the first interaction.
  const resumeAudio = () => {
    if (st.audioCtx && st.audioCtx.state === "suspended") st.audioCtx.resume().catch(() => {});
  };
  ["pointerdown", "keydown"].forEach((ev) => document.addEventListener(ev, resumeAudio, true));
  listCameras().catch(() => {});

  // For tests and debugging (e.g. over the DevTools protocol).
  window.frierenClient = { start, stop: () => stop(true), state: st };

  if (params.get("autostart") === "1") start();
})();
