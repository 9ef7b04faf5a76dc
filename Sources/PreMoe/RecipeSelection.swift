import Foundation
import Models

/// A whole pruning recipe: which stored score set ranks the experts inside a layer, and how many
/// experts each layer keeps. Named `<scores>/<allocation>` (`tcess/uniform` is the paper's).
public struct PruningRecipe: Hashable, Sendable, CustomStringConvertible {
    /// A score set of the pattern: its own scorer's name, one of `scorer_scores`, or `tcess+reap`
    /// (derived: see `TaskPattern.scores(named:)`).
    public var scores: String
    public var allocation: LayerAllocation

    public init(scores: String, allocation: LayerAllocation) {
        self.scores = scores
        self.allocation = allocation
    }

    /// Parses `tcess/routing-mass`.
    /// - Returns: nil for a name without a known allocation after its last `/`.
    public init?(name: String) {
        guard let slash = name.lastIndex(of: "/"), let allocation = LayerAllocation(rawValue: String(name[name.index(after: slash)...])),
              allocation != .selected, slash != name.startIndex
        else { return nil }
        self.init(scores: String(name[..<slash]), allocation: allocation)
    }

    public var description: String { "\(scores)/\(allocation.rawValue)" }

    /// The score sets a profile stores beside its own scorer's when it selects a recipe: the
    /// paper's TCESS, REAP (the best at 50% on some tasks of the demo model) and frequency.
    public static let storedScorers = ["tcess", "reap", "frequency"]

    /// The recipes compared at profile time: each stored score set and their blend, each with the
    /// same count in every layer and with per-layer counts by routing mass. The default
    /// (`tcess/routing-mass`) comes first and wins ties.
    public static let candidates: [PruningRecipe] = {
        let scores = ["tcess", "reap", "frequency", TaskPattern.blendName]
        let allocations: [LayerAllocation] = [.routingMass, .uniform]
        return allocations.flatMap { a in scores.map { PruningRecipe(scores: $0, allocation: a) } }
    }()
}

extension TaskPattern {
    /// What a profile measured to choose the recipe per keep level: the mean negative
    /// log-likelihood per token of held-out **calibration** items (the validation fold, never the
    /// evaluation split) under each candidate recipe, its experts ranked on the other items (the
    /// fit fold). The pattern's stored scores are then made from both folds.
    public struct RecipeSelection: Codable, Equatable, Sendable {
        /// One keep level: the loss of every candidate recipe and the winner.
        public struct Level: Codable, Equatable, Sendable {
            /// Fraction of each layer's routed experts kept (0.5 = half).
            public var keep: Double
            /// Recipe name (`PruningRecipe.description`) → mean NLL per validation token.
            public var losses: [String: Double]
            /// The recipe with the lowest loss (ties: the candidate listed first).
            public var chosen: String

            public init(keep: Double, losses: [String: Double], chosen: String) {
                self.keep = keep
                self.losses = losses
                self.chosen = chosen
            }

            /// The lowest-loss recipe among those with one of `allocations` (ties: `order`, then name).
            public func best(allocations: Set<LayerAllocation>, order: [String] = PruningRecipe.candidates.map(\.description))
                -> PruningRecipe? {
                let rank = Dictionary(order.enumerated().map { ($1, $0) }, uniquingKeysWith: { a, _ in a })
                return losses.compactMap { name, loss in
                    PruningRecipe(name: name).flatMap { allocations.contains($0.allocation) ? ($0, loss) : nil }
                }.min { a, b in
                    if a.1 != b.1 { return a.1 < b.1 }
                    let ra = rank[a.0.description] ?? Int.max, rb = rank[b.0.description] ?? Int.max
                    return ra != rb ? ra < rb : a.0.description < b.0.description
                }?.0
            }
        }

        /// Calibration items and tokens of each fold.
        public var fitItems: Int
        public var fitTokens: Int
        public var validationItems: Int
        public var validationTokens: Int
        /// The full model's mean NLL per validation token (the reference every level is read against).
        public var fullLoss: Double
        /// By keep level, largest first.
        public var levels: [Level]

        enum CodingKeys: String, CodingKey {
            case levels
            case fitItems = "fit_items"
            case fitTokens = "fit_tokens"
            case validationItems = "validation_items"
            case validationTokens = "validation_tokens"
            case fullLoss = "full_loss"
        }

        public init(fitItems: Int, fitTokens: Int, validationItems: Int, validationTokens: Int, fullLoss: Double,
                    levels: [Level]) {
            self.fitItems = fitItems
            self.fitTokens = fitTokens
            self.validationItems = validationItems
            self.validationTokens = validationTokens
            self.fullLoss = fullLoss
            self.levels = levels
        }

        /// The stored level nearest to `keep` (by ratio; ties to the larger level).
        public func level(nearest keep: Double) -> Level? {
            levels.min { a, b in
                let da = abs(log(a.keep / keep)), db = abs(log(b.keep / keep))
                return da != db ? da < db : a.keep > b.keep
            }
        }
    }

    /// Name of the derived score set that blends TCESS and REAP (each layer's vectors scaled to
    /// unit total |score| and added).
    public static let blendName = "tcess+reap"

    /// A stored score set by name: the pattern's own scorer, one of `scorer_scores`, or the
    /// `tcess+reap` blend of the two; nil when the pattern does not hold it.
    public func scores(named name: String) -> [Int: [Double]]? {
        if name == scorer.name { return scores }
        if name == Self.blendName {
            guard let tcess = scores(named: "tcess"), let reap = scores(named: "reap") else { return nil }
            return Dictionary(uniqueKeysWithValues: tcess.compactMap { l, t -> (Int, [Double])? in
                guard let r = reap[l], r.count == t.count else { return nil }
                let mt = t.reduce(0) { $0 + abs($1) }, mr = r.reduce(0) { $0 + abs($1) }
                return (l, t.indices.map { (mt > 0 ? t[$0] / mt : 0) + (mr > 0 ? r[$0] / mr : 0) })
            })
        }
        guard let set = scorerScores?[name] else { return nil }
        return Dictionary(set.compactMap { key, value in Int(key).map { ($0, value) } }, uniquingKeysWith: { a, _ in a })
    }

    /// The recipe a profile chose for a budget of `keep` (the nearest stored level), among
    /// recipes with one of `allocations`; nil without a selection or such a recipe.
    public func selectedRecipe(keep: Double, allocations: Set<LayerAllocation> = [.uniform, .routingMass, .routingMassTotal])
        -> PruningRecipe? {
        guard let level = recipeSelection?.level(nearest: keep) else { return nil }
        if let chosen = PruningRecipe(name: level.chosen), allocations.contains(chosen.allocation),
           scores(named: chosen.scores) != nil {
            return chosen
        }
        return level.best(allocations: allocations)
    }
}

/// Chooses the pruning recipe per keep level by validation loss (`TaskProfiling` calls it when
/// `Settings.selection` is set).
public enum RecipeSelector {
    /// What to compare.
    public struct Settings: Sendable {
        /// Keep levels (fractions of each layer's experts) a recipe is chosen for.
        public var keeps: [Double]
        public var candidates: [PruningRecipe]
        /// Every `validationEvery`-th calibration item (the last of each group) is held out for
        /// validation; the others rank the experts while the recipes are compared.
        public var validationEvery: Int
        /// The fewest experts a layer keeps under a routing-mass allocation.
        public var minimumPerLayer: Int

        public init(keeps: [Double] = [0.5, 0.25, 0.125], candidates: [PruningRecipe] = PruningRecipe.candidates,
                    validationEvery: Int = 5, minimumPerLayer: Int = 1) {
            self.keeps = keeps
            self.candidates = candidates
            self.validationEvery = validationEvery
            self.minimumPerLayer = minimumPerLayer
        }
    }

    /// Compares the candidates on the validation fold.
    /// - Parameters:
    ///   - model: the full model (every expert held); left as it was.
    ///   - fit: a pattern whose score sets come from the fit fold only.
    ///   - loss: mean NLL per token of the validation items on the model as it is when called.
    /// - Returns: per level, every candidate's loss (candidates whose score set `fit` lacks are
    ///   skipped; candidates that keep the same experts are evaluated once) and the winner.
    /// - Throws: `PreMoeError.invalidBudget` when no candidate applies, errors of `loss`.
    public static func compare(model: DecoderModel, fit: TaskPattern, settings: Settings,
                               loss: () throws -> Double) throws -> (fullLoss: Double, levels: [TaskPattern.RecipeSelection.Level]) {
        let fullLoss = try loss()
        guard fullLoss.isFinite else { throw PreMoeError.unsupported("the full model's validation loss is \(fullLoss)") }
        let usable = settings.candidates.filter { fit.scores(named: $0.scores) != nil }
        guard !usable.isEmpty else {
            throw PreMoeError.invalidBudget("no candidate recipe applies: the pattern holds none of their score sets")
        }
        var levels: [TaskPattern.RecipeSelection.Level] = []
        for keep in settings.keeps.sorted(by: >) {
            var losses: [String: Double] = [:]
            var byPlan: [[Int: [Int]]: Double] = [:]
            for recipe in usable {
                let plan = try PruningPlan.make(patterns: [fit], budget: .fraction(keep), allocation: recipe.allocation,
                                                minimumPerLayer: settings.minimumPerLayer, scoreSet: recipe.scores)
                if let known = byPlan[plan.keptExperts] {
                    losses[recipe.description] = known
                    continue
                }
                // JSON has no infinity: a model that assigns a token probability 0 gets the largest loss.
                let measured = try model.withKeptExperts(plan.keptExperts) { try loss() }
                let value = measured.isNaN ? Double.greatestFiniteMagnitude : min(measured, Double.greatestFiniteMagnitude)
                byPlan[plan.keptExperts] = value
                losses[recipe.description] = value
            }
            let level = TaskPattern.RecipeSelection.Level(keep: keep, losses: losses, chosen: "")
            let chosen = level.best(allocations: Set(usable.map(\.allocation)), order: usable.map(\.description))!
            levels.append(.init(keep: keep, losses: losses, chosen: chosen.description))
        }
        return (fullLoss, levels)
    }
}

extension DecoderModel {
    /// Runs `body` with every MoE layer of `kept` routing among those original experts only (in
    /// that order), exactly as a model loaded with that plan routes, then restores the blocks.
    /// Needs the experts held now (a full model); nothing is read from the checkpoint.
    /// - Throws: `PreMoeError.invalidBudget` when a kept expert is not held, errors of `body`.
    public func withKeptExperts<T>(_ kept: [Int: [Int]], _ body: () throws -> T) throws -> T {
        var saved: [Int: MoEBlock] = [:]
        defer { for (l, block) in saved { setFeedForward(.moe(block), layer: l) } }
        for (l, ids) in kept {
            guard layers.indices.contains(l), case .moe(let block) = layers[l].feedForward else {
                throw PreMoeError.invalidBudget("layer \(l) of the plan is not a MoE layer of the model")
            }
            let row = Dictionary(block.expertIDs.enumerated().map { ($1, $0) }, uniquingKeysWith: { a, _ in a })
            let rows = try ids.map { id -> Int in
                guard let r = row[id], block.experts.indices.contains(r) else {
                    throw PreMoeError.invalidBudget("layer \(l): expert \(id) is not held by the model (profile needs every expert)")
                }
                return r
            }
            saved[l] = block
            setFeedForward(.moe(block.keeping(rows: rows, experts: rows.map { block.experts[$0] })), layer: l)
        }
        return try body()
    }
}
