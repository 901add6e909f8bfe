// What /whip.html and /whep.html share: codec preferences and the wait for ICE candidates.
"use strict";

// ?codec=vp8 (or h264, vp9, av1): the transceiver offers only that codec of `kind` (with its
// RTX/RED/FEC helpers), as a browser that cannot or will not use the others would.
function preferCodec(transceiver, kind, name) {
  if (!name || !transceiver.setCodecPreferences || !RTCRtpReceiver.getCapabilities) return;
  const helpers = ["video/rtx", "video/red", "video/ulpfec", "video/flexfec-03"];
  const codecs = RTCRtpReceiver.getCapabilities(kind).codecs.filter((c) => {
    const mime = c.mimeType.toLowerCase();
    return mime === kind + "/" + name.toLowerCase() || helpers.includes(mime);
  });
  if (!codecs.some((c) => !helpers.includes(c.mimeType.toLowerCase()))) throw new Error("this browser has no " + name);
  transceiver.setCodecPreferences(codecs);
}

// Resolves once ICE gathering completed, or after `ms`.
function iceGatheringDone(pc, ms) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    pc.addEventListener("icegatheringstatechange", () => {
      if (pc.iceGatheringState === "complete") { clearTimeout(timer); resolve(); }
    });
  });
}
