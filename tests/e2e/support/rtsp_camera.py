#!/usr/bin/python3
"""An IP camera for the tests: GStreamer's RTSP server (gir1.2-gst-rtsp-server-1.0 through
python3-gi) serving rtsp://127.0.0.1:<port>/cam with H.264 video (a moving test pattern, 320x240,
25 fps, a keyframe every second) and a G.711 mu-law tone of <freq> Hz, until killed.
Usage: rtsp_camera.py <port> <freq>"""
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

port, freq = sys.argv[1], sys.argv[2]
Gst.init(None)
server = GstRtspServer.RTSPServer()
server.set_address("127.0.0.1")
server.set_service(port)
factory = GstRtspServer.RTSPMediaFactory()
factory.set_launch(
    "( videotestsrc is-live=true pattern=ball ! video/x-raw,width=320,height=240,framerate=25/1 "
    "! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=25 ! rtph264pay name=pay0 pt=96 config-interval=1 "
    f"audiotestsrc is-live=true freq={freq} volume=0.5 ! audioconvert ! audioresample "
    "! audio/x-raw,rate=8000,channels=1 ! mulawenc ! rtppcmupay name=pay1 pt=0 )"
)
factory.set_shared(True)
server.get_mount_points().add_factory("/cam", factory)
server.attach(None)
print(f"serving rtsp://127.0.0.1:{port}/cam", flush=True)
GLib.MainLoop().run()
