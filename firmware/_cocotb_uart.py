"""cocotb side of :class:`ttforge.firmware.simulate.SimTransport` (runs inside the
simulator): clocks and resets the board top, and moves bytes between a Unix socket (the
host driver) and the board's UART pins through ``cocotbext-uart``'s UartSource and
UartSink, until the host closes the socket."""

import os
import select
import socket

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, Timer
from cocotbext.uart import UartSink, UartSource


@cocotb.test()
async def serve_uart(dut):
    path = os.environ["TTFORGE_UART_SOCKET"]
    div = int(os.environ["TTFORGE_UART_DIVISOR"])
    clk_ns = int(os.environ["TTFORGE_CLK_NS"])
    baud = 1e9 / (clk_ns * div)
    cocotb.start_soon(Clock(dut.clk, clk_ns, unit="ns").start())
    dut.uart_rx.value = 1
    dut.rst.value = 1
    await ClockCycles(dut.clk, 4)
    dut.rst.value = 0
    await ClockCycles(dut.clk, 4)
    src = UartSource(dut.uart_rx, baud=baud, bits=8, stop_bits=1)
    sink = UartSink(dut.uart_tx, baud=baud, bits=8, stop_bits=1)
    for end in (src, sink):      # not a log line per byte (megabytes of them in a training run)
        end.log.setLevel("WARNING")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    poll = int(os.environ.get("TTFORGE_UART_POLL", 16 * div))   # cycles between socket polls
    # one timer per poll, not one Python wake-up per clock edge (ClockCycles): the long
    # stretches in which the engine computes and the link is idle cost the simulator only
    poll_ns = poll * clk_ns
    try:
        while True:
            await Timer(poll_ns, unit="ns")
            r, _, _ = select.select([s], [], [], 0)
            if r:
                data = s.recv(1 << 16)
                if not data:
                    break                # the host closed the link
                await src.write(data)
            n = sink.count()
            if n:
                s.sendall(bytes(sink.read_nowait(n)))
    finally:
        s.close()
