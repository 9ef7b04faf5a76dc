import Testing
import TestSupport

/// The tolerance helper every parity test relies on must fail on garbage, not score it 0.
@Suite struct ToleranceTests {
    @Test func nanOnEitherSideIsInfinitelyWrong() {
        #expect(maxRelativeError([.nan, .nan], [1, 2]) == .infinity)
        #expect(maxRelativeError([1, 2], [1, .nan]) == .infinity)
        #expect(maxRelativeError([.nan], [.nan]) == .infinity)
    }

    @Test func infinitiesMustMatchExactly() {
        #expect(maxRelativeError([.infinity, 1], [1, 1]) == .infinity)
        #expect(maxRelativeError([-.infinity, 1], [-.infinity, 1]) == 0)
    }

    @Test func lengthMismatchFails() {
        #expect(maxRelativeError([1, 2], [1]) == .infinity)
    }

    @Test func ordinaryDifferencesAreRelativeToTheLargestReference() {
        #expect(maxRelativeError([1, 2.5], [1, 2]) == 0.25)
        #expect(maxRelativeError([0, 0], [0, 0]) == 0)
    }
}
