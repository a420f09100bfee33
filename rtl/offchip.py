"""A simulated off-chip memory and the system the simulators run: CapsAcc with that memory on its
off-chip port.

`OffchipMemory` models the DRAM side of the port (`rtl.dma.OffchipSignature`): `depth` beats of W
bytes; a read request in cycle t is answered in cycle t + L (with L >= 2 the request is registered
at the model's input, a controller's command register, then read synchronously and delayed by L - 2
register stages, so that no path runs from the DMA engine into the memory's address; with L = 1 the
request addresses the memory directly), a write request is registered and stored at the next clock
edge (readable from t + 2: the DMA engine reads no beat sooner after writing it). It is a simulation
model, not part of the accelerator. Amaranth elaborates a memory's initial contents (megabytes of zeros for a deep one),
so Verilator builds take the same model written in Verilog, `OFFCHIP_VERILOG` (an `Instance`;
`CapsAccSystem(..., verilog_memory=True)`); tests play one script on both and compare the traces.

`CapsAccSystem` is the top level of the simulations: the host port of `rtl.capsacc.CapsAcc`, with
a wider `host_addr` and one more `host_sel`, `SEL_OFFCHIP`: the host writes and reads the off-chip
image by beat (host_addr) and 8-byte group (host_lane; byte 8g + i of the beat in bits 8i + 7..8i
of host_wdata, bytes past the beat ignored), while busy is low, with the protocol of the other
memories (a read's data in host_rdata a cycle later). Every other port is CapsAcc's. With
`host_registers` (the FPGA build, `rtl.fpga`) the top registers every host input
`HOST_INPUT_STAGES` (2) times before the accelerator and the memory see it, as a board's host
interface would: the host's commands take effect two cycles later, so that no path runs unclocked
from an input pin into the block RAMs and flip-flops (the accelerator's write enables are decoded
before their registers, `CapsAcc(host_write_decoded=True)`, so that the decode is not on a clocked
path either), and it reads the registers behind the memories (`CapsAcc(host_read_registers=True)`,
so that each block RAM's read data drives one register, which the block can hold itself): a read's
data is in host_rdata four cycles after its address.
"""

from amaranth import ClockSignal, Instance, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from rtl.capsacc import CapsAcc, decode_host_write, host_members, host_write_layout
from rtl.delay import delayed
from rtl.dma import OffchipSignature

SEL_OFFCHIP = 5
HOST_ADDR_BITS = 32
HOST_SIGNATURE = wiring.Signature(host_members(HOST_ADDR_BITS))
"""The signature of `CapsAccSystem`: its host port, the same for every configuration (so a simulator's
ports are known without building the system, `sim.verilator.VerilatorModel.cached`)."""
RING_MIN_STAGES = 5
"""The fewest delay stages `OffchipMemory` holds in a ring memory rather than a chain of registers."""
HOST_INPUTS = ("host_sel", "host_addr", "host_lane", "host_wdata", "host_we", "start", "counter_sel")
"""The inputs of the host port (`rtl.capsacc.host_members`)."""
HOST_INPUT_STAGES = 2
"""Registers on each host input of the FPGA build (`host_registers`): the place and route puts the
input pins at the device's edge, so the first register sits by its pin and the second by the
logic it feeds, and neither path is a long route with logic behind it."""


class OffchipMemory(wiring.Component):
    """`depth` beats of `bytes_per_cycle` bytes, read latency `latency_cycles` (>= 1); a host port
    (used while the DMA is quiet) to load the image and read results: a read's data in host_rdata a
    cycle after its address, or with `host_read_register` two (the beat read is registered before
    its 64 bits are selected, so that the block RAM's read data drives registers only, which the
    block can hold itself: the FPGA build)."""

    def __init__(self, bytes_per_cycle: int, latency_cycles: int, depth: int, host_read_register: bool = False):
        if latency_cycles < 1:
            raise ValueError(f"latency_cycles: {latency_cycles} < 1")
        self.bytes_per_cycle, self.latency_cycles, self.depth = bytes_per_cycle, latency_cycles, depth
        self.host_read_register = host_read_register
        super().__init__({
            "port": In(OffchipSignature(bytes_per_cycle)),
            "host_addr": In(HOST_ADDR_BITS), "host_lane": In(6), "host_wdata": In(64), "host_we": In(1),
            "host_rdata": Out(64),
        })

    def elaborate(self, platform):
        m = Module()
        width = 8 * self.bytes_per_cycle
        # The beat read in a cycle that writes it is never used: the DMA engine never reads a beat
        # it wrote in the two cycles before, and the host reads no beat in the cycle it writes one
        # (its read data then is that of a write). So a read-write collision is don't-care
        # (`no_rw_check`): synthesis adds no bypass logic behind the read data, and the FPGA build's
        # block RAMs can register it themselves (`rtl.ecp5_pack`).
        m.submodules.beats = beats = Memory(shape=width, depth=self.depth, init=[], attrs={"no_rw_check": 1})
        reader, writer = beats.read_port(), beats.write_port(granularity=8)
        # A write request is registered and stored a cycle later (a controller's input register);
        # the DMA engine never reads a beat within two cycles of writing it (`rtl.dma`).
        posted, posted_addr, posted_data = Signal(), Signal.like(self.port.addr), Signal(width)
        m.d.sync += [posted.eq(self.port.write), posted_addr.eq(self.port.addr), posted_data.eq(self.port.wdata)]
        request, request_addr = self.port.read, self.port.addr
        if self.latency_cycles > 1:  # the request's register is the first of the L cycles
            request, request_addr = Signal(name="request"), Signal.like(self.port.addr, name="request_addr")
            m.d.sync += [request.eq(self.port.read), request_addr.eq(self.port.addr)]
        m.d.comb += [reader.addr.eq(Mux(request, request_addr, self.host_addr)),
                     writer.addr.eq(Mux(posted, posted_addr, self.host_addr))]
        with m.If(posted):
            m.d.comb += [writer.data.eq(posted_data), writer.en.eq(-1)]
        with m.Else():
            m.d.comb += writer.data.eq(self.host_wdata.replicate(-(-width // 64))[:width])
            for byte in range(self.bytes_per_cycle):
                m.d.comb += writer.en[byte].eq(self.host_we & (self.host_lane == byte // 8))
        valid = Signal()
        m.d.sync += valid.eq(request)
        stages = max(self.latency_cycles - 2, 0)  # the L cycles less the read and any request register
        valid = delayed(m, valid, stages, 1, "rvalid_")
        m.d.comb += [self.port.rvalid.eq(valid), self.port.rdata.eq(self._delayed(m, reader.data, stages))]
        beat = delayed(m, reader.data, int(self.host_read_register), width, "host_beat", reset_less=True)
        lane_q = delayed(m, self.host_lane, 1 + self.host_read_register, 6, "lane_q")
        m.d.comb += self.host_rdata.eq(beat.word_select(lane_q, 64) if width > 64 else beat)
        return m

    @staticmethod
    def _delayed(m: Module, value, stages: int):
        """`value` `stages` cycles later. Up to `RING_MIN_STAGES` - 1 stages a chain of registers; from
        `RING_MIN_STAGES` on (L = 64: 62 stages of W bytes, 7,936 flip-flops at W = 16) a register, then a
        ring of D >= S = `stages` - 3 rows (a power of two) in a memory, the row of cycle t written at t mod D
        and read back from row (t + 1 - S) mod D (its read register the S-th stage), then two registers, so
        that an FPGA build holds the ring in block RAM and no path runs from a block RAM's output into another
        block RAM or into the accelerator (the first register behind the ring has no other load, so it can sit
        beside the block). The `rvalid` bits stay registers: a reset clears them as before. The ring's data
        registers have no reset (the `rvalid` bits qualify them), and its row read and row written are never
        the same (S >= 2 and D >= S), so its read-write collisions are don't-care (`no_rw_check`)."""
        if stages < RING_MIN_STAGES:
            return delayed(m, value, stages, len(value), "rdata_")
        value_in = Signal(len(value), name="rdata_ring_in", reset_less=True)
        m.d.sync += value_in.eq(value)
        stages -= 3  # the registers before and after the ring
        depth = 1 << (stages - 1).bit_length()
        m.submodules.delay = ring = Memory(shape=len(value), depth=depth, init=[], attrs={"no_rw_check": 1})
        writer, reader = ring.write_port(), ring.read_port(transparent_for=())
        slot = Signal(range(depth), name="delay_slot")
        m.d.sync += slot.eq(slot + 1)
        m.d.comb += [writer.addr.eq(slot), writer.data.eq(value_in), writer.en.eq(1),
                     reader.addr.eq(slot + 1 - stages)]
        return delayed(m, reader.data, 2, len(value), "rdata_ring_out", reset_less=True)


OFFCHIP_VERILOG = """
module nascaps_offchip_memory #(parameter BYTES = 16, parameter LATENCY = 1, parameter ABITS = 1) (
  input clk,
  input [28:0] port_addr, input port_read, input port_write, input [8*BYTES-1:0] port_wdata,
  output [8*BYTES-1:0] port_rdata, output port_rvalid,
  input [31:0] host_addr, input [5:0] host_lane, input [63:0] host_wdata, input host_we,
  output [63:0] host_rdata
);
  reg [8*BYTES-1:0] beats [0:(1 << ABITS) - 1];
  localparam STAGES = LATENCY > 1 ? LATENCY - 1 : 1;
  reg [8*BYTES-1:0] data_q [0:STAGES-1];
  reg valid_q [0:STAGES-1];
  reg [5:0] lane_q;
  reg posted;
  reg [28:0] posted_addr;
  reg [8*BYTES-1:0] posted_data;
  reg request_q;
  reg [28:0] request_addr_q;
  wire request = LATENCY > 1 ? request_q : port_read;
  wire [28:0] request_addr = LATENCY > 1 ? request_addr_q : port_addr;
  wire [ABITS-1:0] raddr = request ? request_addr[ABITS-1:0] : host_addr[ABITS-1:0];
  wire [ABITS-1:0] waddr = posted ? posted_addr[ABITS-1:0] : host_addr[ABITS-1:0];
  wire [8*BYTES+63:0] padded = {64'd0, data_q[0]};
  integer k;
  always @(posedge clk) begin
    request_q <= port_read;
    request_addr_q <= port_addr;
    data_q[0] <= beats[raddr];
    valid_q[0] <= request;
    for (k = 1; k < STAGES; k = k + 1) begin
      data_q[k] <= data_q[k - 1];
      valid_q[k] <= valid_q[k - 1];
    end
    lane_q <= host_lane;
    posted <= port_write;
    posted_addr <= port_addr;
    posted_data <= port_wdata;
    if (posted)
      beats[waddr] <= posted_data;
    else
      for (k = 0; k < BYTES; k = k + 1)
        if (host_we && host_lane == k / 8)
          beats[waddr][8*k +: 8] <= host_wdata[8*(k % 8) +: 8];
  end
  assign port_rdata = data_q[STAGES - 1];
  assign port_rvalid = valid_q[STAGES - 1];
  assign host_rdata = padded[64*lane_q +: 64];
endmodule
"""
"""`OffchipMemory` in Verilog (parameters BYTES = W, LATENCY = L, 2^ABITS beats), for Verilator."""


class CapsAccSystem(wiring.Component):
    """`rtl.capsacc.CapsAcc` (built from `config`'s hardware fields) with an off-chip memory of
    `offchip_depth` beats (a power of two) on its off-chip port: `OffchipMemory`, or with
    `verilog_memory` an `Instance` of `OFFCHIP_VERILOG` (`verilog_modules` holds its text); with
    `host_registers`, every host input registered `HOST_INPUT_STAGES` times at the top (`HOST_INPUTS`); see the module
    docstring for the host port."""

    def __init__(self, config, offchip_depth: int, verilog_memory: bool = False, host_registers: bool = False):
        if offchip_depth < 2 or offchip_depth & (offchip_depth - 1):
            raise ValueError(f"offchip_depth: {offchip_depth} is not a power of two >= 2")
        self.config, self.offchip_depth, self.verilog_memory = config, offchip_depth, verilog_memory
        if verilog_memory and host_registers:
            raise ValueError("host_registers (the FPGA build) takes OffchipMemory, not verilog_memory")
        self.host_registers = host_registers
        self.verilog_modules = (OFFCHIP_VERILOG,) if verilog_memory else ()
        self.accelerator = CapsAcc(**config.hardware(), host_read_registers=host_registers,
                                   host_write_decoded=host_registers)
        super().__init__(HOST_SIGNATURE)

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        m.submodules.accelerator = acc = self.accelerator
        # The host inputs as the accelerator and the memory see them: the ports, or their registers.
        stages = HOST_INPUT_STAGES if self.host_registers else 0
        inputs = {name: delayed(m, getattr(self, name), stages, len(getattr(self, name)), f"{name}_q")
                  for name in HOST_INPUTS}
        host_sel, host_we = inputs["host_sel"], inputs["host_we"]
        if self.host_registers:
            # The accelerator's write enables are decoded from the ports, then registered: the
            # decode runs before the clock, not between the input registers and the block RAMs.
            layout = host_write_layout(cfg.rows, cfg.cols)
            decoded = Signal(layout)
            m.d.comb += decode_host_write(decoded, self.host_we, self.host_sel, self.host_lane)
            m.d.comb += acc.host_write.eq(delayed(m, decoded, stages, layout, "host_write_q"))
        host_addr, host_lane, host_wdata = Signal(HOST_ADDR_BITS), Signal(6), Signal(64)
        memory_we, host_rdata = Signal(), Signal(64)
        if self.verilog_memory:
            port = acc.offchip
            m.submodules.offchip = Instance(
                "nascaps_offchip_memory", p_BYTES=cfg.offchip_bytes_per_cycle, p_LATENCY=cfg.offchip_latency_cycles,
                p_ABITS=(self.offchip_depth - 1).bit_length(), i_clk=ClockSignal(),
                i_port_addr=port.addr, i_port_read=port.read, i_port_write=port.write, i_port_wdata=port.wdata,
                o_port_rdata=port.rdata, o_port_rvalid=port.rvalid, i_host_addr=host_addr, i_host_lane=host_lane,
                i_host_wdata=host_wdata, i_host_we=memory_we, o_host_rdata=host_rdata)
        else:
            m.submodules.offchip = memory = OffchipMemory(cfg.offchip_bytes_per_cycle, cfg.offchip_latency_cycles,
                                                          self.offchip_depth, host_read_register=self.host_registers)
            wiring.connect(m, acc.offchip, memory.port)
            m.d.comb += [memory.host_addr.eq(host_addr), memory.host_lane.eq(host_lane),
                         memory.host_wdata.eq(host_wdata), memory.host_we.eq(memory_we), host_rdata.eq(memory.host_rdata)]
        to_memory = host_sel == SEL_OFFCHIP
        m.d.comb += [
            acc.host_sel.eq(host_sel), acc.host_addr.eq(inputs["host_addr"]), acc.host_lane.eq(inputs["host_lane"]),
            acc.host_wdata.eq(inputs["host_wdata"]), acc.host_we.eq(host_we & ~to_memory),
            acc.start.eq(inputs["start"]), self.busy.eq(acc.busy), self.done.eq(acc.done),
            acc.counter_sel.eq(inputs["counter_sel"]), self.counter.eq(acc.counter),
            host_addr.eq(inputs["host_addr"]), host_lane.eq(inputs["host_lane"]), host_wdata.eq(inputs["host_wdata"]),
            memory_we.eq(host_we & to_memory & ~acc.busy),
        ]
        # A read's data comes the accelerator's host_read_latency after its address: a cycle, or
        # with `host_registers` two (`CapsAcc(host_read_registers=True)`), as the memory's
        # (`OffchipMemory(host_read_register=True)`).
        latency = acc.host_read_latency
        sel_q = delayed(m, host_sel, latency, 3, "sel_q")
        m.d.comb += self.host_rdata.eq(Mux(sel_q == SEL_OFFCHIP, host_rdata, acc.host_rdata))
        return m
