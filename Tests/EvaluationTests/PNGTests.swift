import Foundation
import Testing

@testable import Evaluation

/// Reads PNG files back with an independent little decoder (chunks, CRCs, stored deflate blocks).
@Suite struct PNGTests {
    struct Chunk {
        var type: String
        var payload: [UInt8]
        var crc: UInt32
    }

    static func uint32(_ b: ArraySlice<UInt8>) -> UInt32 {
        let i = b.startIndex
        return UInt32(b[i]) << 24 | UInt32(b[i + 1]) << 16 | UInt32(b[i + 2]) << 8 | UInt32(b[i + 3])
    }

    /// Splits a file after its signature into chunks.
    static func chunks(_ data: Data) throws -> [Chunk] {
        let bytes = [UInt8](data)
        var chunks: [Chunk] = []
        var offset = 8
        while offset < bytes.count {
            try #require(offset + 12 <= bytes.count)
            let length = Int(uint32(bytes[offset..<offset + 4]))
            try #require(offset + 12 + length <= bytes.count)
            let type = String(decoding: bytes[offset + 4..<offset + 8], as: UTF8.self)
            let payload = Array(bytes[offset + 8..<offset + 8 + length])
            chunks.append(Chunk(type: type, payload: payload, crc: uint32(bytes[offset + 8 + length..<offset + 12 + length])))
            offset += 12 + length
        }
        return chunks
    }

    /// Inflates a zlib stream made only of stored blocks; fails on anything else.
    static func inflateStored(_ stream: [UInt8]) throws -> [UInt8] {
        try #require(stream.count >= 6)
        #expect(stream[0] & 0x0F == 8, "compression method 8 (deflate)")
        #expect((Int(stream[0]) * 256 + Int(stream[1])) % 31 == 0, "FCHECK")
        #expect(stream[1] & 0x20 == 0, "no preset dictionary")
        var out: [UInt8] = []
        var i = 2
        var final = false
        while !final {
            try #require(i + 5 <= stream.count)
            final = stream[i] & 1 == 1
            try #require((stream[i] >> 1) & 3 == 0, "only stored blocks are expected")
            let len = Int(stream[i + 1]) | Int(stream[i + 2]) << 8
            let nlen = Int(stream[i + 3]) | Int(stream[i + 4]) << 8
            #expect(len ^ nlen == 0xFFFF, "NLEN is the complement of LEN")
            try #require(i + 5 + len <= stream.count)
            out += stream[i + 5..<i + 5 + len]
            i += 5 + len
        }
        try #require(i + 4 == stream.count, "the Adler-32 ends the stream")
        #expect(uint32(stream[i..<i + 4]) == PNG.adler32(out))
        return out
    }

    static func testImage(width: Int, height: Int) -> RGBImage {
        var image = RGBImage(width: width, height: height)
        for y in 0..<height {
            for x in 0..<width { image[x, y] = RGB(UInt8(x % 256), UInt8(y % 256), UInt8((x * 7 + y * 13) % 256)) }
        }
        return image
    }

    @Test func checksumsMatchTheirStandardCheckValues() {
        // The "check" values of the CRC catalogue and RFC 1950's reference implementation.
        #expect(PNG.crc32(Array("123456789".utf8)) == 0xCBF4_3926)
        #expect(PNG.crc32([UInt8]()) == 0)
        #expect(PNG.adler32(Array("Wikipedia".utf8)) == 0x11E6_0398)
        #expect(PNG.adler32([UInt8]()) == 1)
        // Long runs of 0xFF exercise the modulo reduction.
        let ones = [UInt8](repeating: 0xFF, count: 100_000)
        var a: UInt64 = 1, b: UInt64 = 0
        for byte in ones {
            a = (a + UInt64(byte)) % 65521
            b = (b + a) % 65521
        }
        #expect(PNG.adler32(ones) == UInt32(b << 16 | a))
    }

    @Test(arguments: [(1, 1), (3, 2), (17, 5), (200, 120)])
    func encodedFileDecodesToThePixels(width: Int, height: Int) throws {
        let image = Self.testImage(width: width, height: height)
        let data = PNG.encode(image)
        #expect(Array(data.prefix(8)) == [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A])
        let chunks = try Self.chunks(data)
        #expect(chunks.map(\.type) == ["IHDR", "IDAT", "IEND"])
        for chunk in chunks {
            #expect(chunk.crc == PNG.crc32(Array(chunk.type.utf8) + chunk.payload), "CRC of \(chunk.type)")
        }
        let ihdr = chunks[0].payload
        try #require(ihdr.count == 13)
        #expect(Self.uint32(ihdr[0..<4]) == UInt32(width))
        #expect(Self.uint32(ihdr[4..<8]) == UInt32(height))
        #expect(Array(ihdr[8...]) == [8, 2, 0, 0, 0], "8-bit RGB, deflate, filter 0, no interlace")
        #expect(chunks[2].payload.isEmpty)

        let raw = try Self.inflateStored(chunks[1].payload)
        let stride = width * 3 + 1
        try #require(raw.count == height * stride)
        var pixels: [UInt8] = []
        for y in 0..<height {
            #expect(raw[y * stride] == 0, "filter type none")
            pixels += raw[(y * stride + 1)..<((y + 1) * stride)]
        }
        #expect(pixels == image.pixels)
    }

    @Test func largeImagesSpanSeveralStoredBlocks() throws {
        let image = Self.testImage(width: 200, height: 120)  // 72,120 bytes of scanlines
        let idat = try #require(try Self.chunks(PNG.encode(image)).first { $0.type == "IDAT" })
        // Header (2) + two blocks (5 + 65,535 and 5 + rest) + Adler (4).
        #expect(idat.payload.count == 2 + 5 * 2 + 120 * 601 + 4)
        #expect(idat.payload[2] == 0, "the first block is not final")
    }

    @Test func drawingClipsToTheImage() {
        var image = RGBImage(width: 4, height: 3, fill: .black)
        image.fillRect(x: 2, y: 1, width: 10, height: 10, .white)
        #expect(image[1, 1] == .black)
        #expect(image[3, 2] == .white)
        image.fillRect(x: -5, y: -5, width: 6, height: 6, RGB(1, 2, 3))
        #expect(image[0, 0] == RGB(1, 2, 3))
        #expect(image[1, 0] == .black)
        var big = RGBImage(width: 6, height: 6, fill: .black)
        big.draw(image, x: 4, y: 4)
        #expect(big[4, 4] == RGB(1, 2, 3))
        #expect(big[5, 5] == .black)
    }
}
